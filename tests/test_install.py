"""What ships and what does not: a built wheel works without the source tree (`pip install .`, not `-e`), and the
files that running tinyray writes in a checkout are ignored, not committed.

The wheel is built from a copy of the tracked sources and installed with ``--no-deps`` into a fresh virtual
environment. That environment sees the dependencies (torch, Ray, MLflow...) of the one running the tests through a
``.pth`` line, so nothing is downloaded, but not the editable tinyray installed there (its finder is loaded by a
``.pth`` of that site-packages, and lines of a ``.pth`` do not process the folders they add). The commands run from
an empty folder with no ``PYTHONPATH``: the repository is out of reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

def _copy_sources(target: Path) -> Path:
    """The tracked files of the repository (no build/, egg-info or results left over from other builds)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, object]:
    """A fresh venv with the built wheel installed; returns its ``bin`` folder and a clean environment."""
    root = tmp_path_factory.mktemp("install")
    sources = _copy_sources(root / "src")
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(wheels), str(sources)], check=True, cwd=root)
    (wheel,) = wheels.glob("tinyray-*.whl")

    unset = ("PYTHONPATH", "VIRTUAL_ENV", "RAY_ADDRESS", "MLFLOW_TRACKING_URI")
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env_dir = root / "venv"
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["TINYRAY_CACHE"] = str(root / "cache")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--force-reinstall", "--quiet", str(wheel)], check=True, cwd=root, env=env)
    # the dependencies of the environment running the tests, after the fresh venv's own site-packages (written
    # after the install, so that pip does not take the editable tinyray there for this one)
    Path(site, "tinyray-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    cwd = root / "elsewhere"
    cwd.mkdir()
    return {"bin": env_dir / "bin", "site": Path(site), "env": env, "cwd": cwd}


def _run(installed, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed["bin"] / argv[0]), *argv[1:]], cwd=installed["cwd"], env=installed["env"],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.integration
def test_the_installed_package_is_the_wheel_not_the_source_tree(installed):
    done = _run(installed, "python", "-c", "import tinyray; print(tinyray.__file__)")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve().is_relative_to(installed["site"].resolve())


@pytest.mark.slow
@pytest.mark.integration
def test_installed_flops_reads_the_shipped_space(installed):
    done = _run(installed, "tinyray", "flops", "--r", "0.84", "--d", "1.1", "--w", "0.75", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["resolution"] == 188 and data["params"] == 3_730_562


@pytest.mark.slow
@pytest.mark.integration
def test_installed_two_trial_search_runs(installed):
    storage = installed["cwd"] / "results"
    done = _run(installed, "tinyray", "search", "--budget", "200M", "--data", "synthetic:300/100", "--trials", "2",
                "--max-epochs", "1", "--storage", str(storage), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["trials"] == 2
    assert (storage / "b200M" / "trials.csv").is_file()


@pytest.mark.parametrize("made_by_running", ["mlflow.db", "mlartifacts/run/file", "tinyray-bench/bench/x",
                                             "tinyray-results/b200M/trials.csv"])
def test_what_running_tinyray_writes_in_the_repository_is_ignored_not_committed(made_by_running):
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert made_by_running.split("/")[0] not in {line.split("/")[0] for line in tracked.splitlines()}
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", made_by_running], cwd=REPO)
    assert ignored.returncode == 0


def test_every_package_tinyray_imports_is_declared_in_pyproject():
    import ast
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    imported: set[str] = set()
    for path in (REPO / "tinyray").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"tinyray", "__future__"}
    assert {"torch", "ray", "PIL", "scipy", "requests"} <= third_party  # the scan sees imports inside functions

    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {normal(re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]) for requirement in project["dependencies"]}
    distributions = packages_distributions()
    missing = {module: distributions.get(module) for module in third_party
               if not {normal(name) for name in distributions.get(module, [])} & declared}
    assert not missing, f"imported by tinyray but not declared in pyproject.toml: {missing}"
