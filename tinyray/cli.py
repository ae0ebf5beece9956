"""The ``tinyray`` command line: parse arguments, call one function, print the result.

Every subcommand validates its input where it enters and turns a :class:`~tinyray.errors.UserError` into one
line on stderr and exit status 2. Heavy libraries are imported inside the command functions so that
``tinyray --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Callable, NoReturn, Sequence

from tinyray.errors import UserError

EXAMPLES = {
    "tinyray": """examples:
  tinyray search --budget 200M                 # the whole search on this machine (local Ray, MLflow, built-in data)
  tinyray flops --r 0.84 --d 1.1 --w 0.75      # TinyNet-B: resolution, FLOPs, parameters
  tinyray train --r 0.5 --d 0.5 --w 0.5 --epochs 3""",
    "search": """examples:
  tinyray search --budget 200M                          # ~10 min on 2 CPUs: local Ray, built-in data, local MLflow
  tinyray search --budget 1.2G --trials 200 --max-epochs 30 --data ~/imagenet --address auto --gpus-per-trial 0.25
  tinyray search --budget 100M --searcher random --scheduler fifo --name paper-protocol""",
    "flops": """example:
  tinyray flops --r 0.86 --d 1.2 --w 1.0 --json   # TinyNet-A: 192 px, 336.9M FLOPs, 6.19M params""",
    "ui": """examples:
  tinyray ui tinyray-results/b200M             # the MLflow UI on that search's runs, at http://127.0.0.1:5000
  tinyray ui tinyray-results --port 5001       # every search in that storage root
  tinyray ui tinyray-results/b200M --tracking-uri http://127.0.0.1:5000   # a search logged to a tracking server""",
    "report": """example:
  tinyray report tinyray-results/b200M         # writes tinyray-results/b200M/report.html (one self-contained page)
  tinyray report tinyray-results/b200M --out ~/b200M.html""",
    "train": """example:
  tinyray train --r 0.5 --d 0.6 --w 0.5 --epochs 3              # built-in data, proxy recipe
  tinyray train --r 0.86 --d 1.2 --w 1.0 --data ~/imagenet --recipe paper --epochs 350""",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit 2) like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def _float_option(name: str, *, allow_zero: bool = False) -> Callable[[str], float]:
    """An argparse type for a finite number above zero (or at least zero with ``allow_zero``)."""
    wanted = "zero or a positive number" if allow_zero else "a positive number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{name} must be {wanted}, got {text!r}")
        return value

    return parse


def _positive_float(name: str) -> Callable[[str], float]:
    return _float_option(name)


def _int_at_least(name: str, low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be at least {low}, got {value}")
        return value

    return parse


def _add_point(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--r", type=_positive_float("--r"), required=True, help="resolution multiplier (input side floor(224 r))")
    parser.add_argument("--d", type=_positive_float("--d"), required=True, help="depth multiplier (blocks per stage)")
    parser.add_argument("--w", type=_positive_float("--w"), required=True, help="width multiplier (channels)")
    parser.add_argument("--space", default=None, help="search space: a name in search_spaces/ (default efficientnet_b0) or a YAML path")


def build_parser() -> argparse.ArgumentParser:
    """The full ``tinyray`` argument parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="tinyray",
        description="Find the best tiny network for a compute budget (TinyNets' resolution/depth/width search).",
        epilog=EXAMPLES["tinyray"],
        formatter_class=fmt,
    )
    from tinyray import __version__

    parser.add_argument("--version", action="version", version=f"tinyray {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    search = sub.add_parser("search", help="search the cube for the best networks under a FLOPs budget", epilog=EXAMPLES["search"], formatter_class=fmt)
    _add_search_options(search)
    search.set_defaults(func=cmd_search)

    flops = sub.add_parser("flops", help="resolution, FLOPs and parameters of one (r, d, w)", epilog=EXAMPLES["flops"], formatter_class=fmt)
    _add_point(flops)
    flops.add_argument("--num-classes", type=_int_at_least("--num-classes", 1), default=1000, help="classifier outputs (default 1000, as the paper counts)")
    flops.add_argument("--measure", action="store_true", help="also build the network and count it with torch's FLOP counter")
    flops.add_argument("--json", action="store_true", help="print one JSON object")
    flops.set_defaults(func=cmd_flops)

    train = sub.add_parser("train", help="train one (r, d, w) candidate and print its top-1", epilog=EXAMPLES["train"], formatter_class=fmt)
    _add_point(train)
    train.add_argument("--epochs", type=_int_at_least("--epochs", 1), default=3, help="epochs to train (default 3)")
    train.add_argument("--data", default=None, help="'synthetic' (default: built-in data, generated on the spot) or a folder with train/ and val/ class subfolders")
    train.add_argument("--recipe", choices=("proxy", "paper"), default=None, help="training recipe (default: proxy on built-in data, paper on folders)")
    train.add_argument("--batch-size", type=_int_at_least("--batch-size", 1), default=None, help="batch size (default: the recipe's)")
    train.add_argument("--seed", type=_int_at_least("--seed", 0), default=0, help="random seed (default 0)")
    train.add_argument("--threads", type=_int_at_least("--threads", 1), default=None, help="torch CPU threads (default: torch's choice)")
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.set_defaults(func=cmd_train)

    ui = sub.add_parser("ui", help="browse a search's runs in the MLflow UI (on 127.0.0.1, until Ctrl-C)", epilog=EXAMPLES["ui"], formatter_class=fmt)
    ui.add_argument("results_dir", nargs="?", default=None, metavar="RESULTS_DIR", help="a search's results folder (<storage>/<name>) or a storage root (default ./tinyray-results)")
    ui.add_argument("--tracking-uri", default=None, help="the store the search logged to (default $MLFLOW_TRACKING_URI or the sqlite store beside RESULTS_DIR)")
    ui.add_argument("--port", type=_int_at_least("--port", 0), default=5000, help="port of the UI (default 5000; 0 picks a free one)")
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only; reach it from elsewhere by SSH port forwarding)")
    ui.set_defaults(func=cmd_ui)

    report = sub.add_parser("report", help="write a search's HTML report: front, formula, r/d/w importance, best per budget", epilog=EXAMPLES["report"], formatter_class=fmt)
    report.add_argument("results_dir", metavar="RESULTS_DIR", help="a search's results folder (<storage>/<name>)")
    report.add_argument("--out", default=None, help="the HTML file to write (default RESULTS_DIR/report.html)")
    report.set_defaults(func=cmd_report)
    return parser


def _add_search_options(parser: argparse.ArgumentParser) -> None:
    from tinyray.search import SCHEDULERS, SEARCHERS, SearchConfig

    defaults = SearchConfig(budget=1)
    add = parser.add_argument
    add("--budget", required=True, help="FLOPs budget: multiply-accumulates of one image, e.g. 200M, 1.2G, 2e8")
    add("--name", default=None, help="search name: results folder, Tune and MLflow experiment (default: b<budget>, e.g. b200M)")
    add("--storage", default=str(defaults.storage), help=f"results root (default ./{defaults.storage})")
    add("--space", default=None, help="search space: a name in search_spaces/ (default efficientnet_b0) or a YAML path")
    add("--data", default=None, help="'synthetic' (default, built-in) or a folder with train/ and val/ class subfolders")
    add("--trials", type=_int_at_least("--trials", 1), default=defaults.trials, help=f"number of trials (default {defaults.trials})")
    add("--max-epochs", type=_int_at_least("--max-epochs", 1), default=defaults.max_epochs, help=f"epochs of a fully trained trial (default {defaults.max_epochs})")
    add("--grace-period", type=_int_at_least("--grace-period", 1), default=defaults.grace_period, help=f"ASHA's first rung in epochs (default {defaults.grace_period})")
    add("--reduction-factor", type=_int_at_least("--reduction-factor", 2), default=defaults.reduction_factor, help=f"ASHA's eta (default {defaults.reduction_factor})")
    add("--searcher", choices=SEARCHERS, default=defaults.searcher, help="nsga3 (default) or random (the paper's protocol)")
    add("--scheduler", choices=SCHEDULERS, default=defaults.scheduler, help="asha (default) or fifo (train every trial fully)")
    add("--seed", type=_int_at_least("--seed", 0), default=defaults.seed, help="seed of the searcher and the trials (default 0)")
    add("--floor", default=None, help="lowest FLOPs of a candidate (default budget/16), e.g. 12M")
    add("--pop-size", type=_int_at_least("--pop-size", 4), default=defaults.pop_size, help=f"NSGA-III population (default {defaults.pop_size})")
    add("--cpus-per-trial", type=_positive_float("--cpus-per-trial"), default=defaults.cpus_per_trial, help="CPUs of one trial (default 1)")
    add("--gpus-per-trial", type=_float_option("--gpus-per-trial", allow_zero=True), default=defaults.gpus_per_trial, help="GPUs of one trial, fractions share a GPU (default 0)")
    add("--recipe", choices=("proxy", "paper"), default=None, help="training recipe (default: proxy on built-in data, paper on folders)")
    add("--address", default=None, help="Ray cluster to join ('auto' or host:port; default $RAY_ADDRESS or a local Ray)")
    add("--tracking-uri", default=None, help="MLflow tracking server (default $MLFLOW_TRACKING_URI or a sqlite store in --storage)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quiet", action="store_true", help="no progress display")
    mode.add_argument("--json", action="store_true", help="progress as JSON lines, then one JSON summary")


def cmd_search(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinyray.cost import format_flops, parse_budget
    from tinyray.search import SearchConfig, run_search

    budget = parse_budget(args.budget)
    floor = parse_budget(args.floor) if args.floor is not None else None
    config = SearchConfig(
        budget=budget, name=args.name or f"b{format_flops(budget)}", storage=Path(args.storage), space=args.space,
        data=args.data, trials=args.trials, max_epochs=args.max_epochs, grace_period=args.grace_period,
        reduction_factor=args.reduction_factor, searcher=args.searcher, scheduler=args.scheduler, seed=args.seed,
        floor=floor, pop_size=args.pop_size, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        recipe=args.recipe, address=args.address, tracking_uri=args.tracking_uri,
        progress="json" if args.json else "quiet" if args.quiet else "live",
    )
    result = run_search(config)
    if args.json:
        print(json.dumps(result.summary()))
    else:
        print(result.report())
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    from tinyray.cost import analytic_cost, format_flops, measured_cost
    from tinyray.space import load_space

    space = load_space(args.space)
    space.check_point(args.r, args.d, args.w)
    cost = analytic_cost(space, args.r, args.d, args.w, args.num_classes)
    out: dict[str, Any] = {"space": space.name, "r": args.r, "d": args.d, "w": args.w, **cost.as_dict()}
    if args.measure:
        measured = measured_cost(space, args.r, args.d, args.w, args.num_classes)
        out["measured_flops"], out["measured_params"] = measured.flops, measured.params
    if args.json:
        print(json.dumps(out))
    else:
        print(f"r={args.r:g} d={args.d:g} w={args.w:g}  resolution {cost.resolution}px  "
              f"FLOPs {format_flops(cost.flops)}  params {cost.params / 1e6:.3f}M")
        if args.measure:
            print(f"measured by torch: FLOPs {format_flops(out['measured_flops'])}  params {out['measured_params'] / 1e6:.3f}M")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tinyray.cost import analytic_cost, format_flops
    from tinyray.data import load_data
    from tinyray.space import load_space
    from tinyray.search import default_recipe
    from tinyray.train import train_candidate

    space = load_space(args.space)
    space.check_point(args.r, args.d, args.w)
    data = load_data(args.data)
    recipe = args.recipe or default_recipe(data)
    cost = analytic_cost(space, args.r, args.d, args.w, data.num_classes)

    def report(epoch: Any, checkpoint: Any) -> None:
        if not args.json:
            print(f"epoch {epoch.epoch}/{args.epochs}  top1 {epoch.top1:.4f}  val_loss {epoch.val_loss:.4f}  "
                  f"{epoch.images_per_second:.0f} img/s", file=sys.stderr, flush=True)

    result = train_candidate(
        space, args.r, args.d, args.w, data,
        epochs=args.epochs, recipe=recipe, seed=args.seed, batch_size=args.batch_size,
        threads=args.threads, callback=report,
    )
    out = {
        "space": space.name, "r": args.r, "d": args.d, "w": args.w, **cost.as_dict(),
        "train_resolution": result.resolution, "data": data.name, "recipe": recipe,
        "epochs": result.epochs_trained, "top1": result.final_top1, "best_top1": result.best_top1,
        "train_seconds": round(result.train_seconds, 2),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{data.name}: top1 {result.final_top1:.4f} after {result.epochs_trained} epochs "
              f"(trained at {result.resolution}px; deploys at {cost.resolution}px, "
              f"{format_flops(cost.flops)} FLOPs, {cost.params / 1e6:.3f}M params)")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from tinyray.ui import serve

    if args.port > 65535:
        raise UserError(f"--port must be at most 65535, got {args.port}")
    return serve(args.results_dir, tracking_uri=args.tracking_uri, host=args.host, port=args.port)


def cmd_report(args: argparse.Namespace) -> int:
    from tinyray.report import write_report

    print(f"report: {write_report(args.results_dir, args.out)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tinyray`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UserError as exc:
        print(f"tinyray {args.command}: error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print(f"tinyray {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
