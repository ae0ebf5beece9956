"""The one exception type for mistakes a user can fix.

A :class:`UserError` carries a single line that says what is wrong and how to fix it. The CLI prints it and
exits with status 2, without a traceback; internal invariants use ``assert`` or ordinary exceptions instead.
"""


class UserError(Exception):
    """A mistake in user input (an option, a file, a path, a service address) with a one-line fix."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep it to one line whatever the caller passed: the CLI contract is a single line on stderr.
        super().__init__(" ".join(str(message).split()))


class Interrupted(Exception):
    """Work stopped cleanly by Ctrl-C; the single line says what was kept and the command that continues it.

    The CLI prints it and exits with status 130 (128 + SIGINT), as shells do for an interrupted command.
    """

    exit_code = 130

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
