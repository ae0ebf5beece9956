"""The ``tinyray`` command line: parse arguments, call one function, print the result.

Every subcommand validates its input where it enters and turns a :class:`~tinyray.errors.UserError` into one
line on stderr and exit status 2. Heavy libraries are imported inside the command functions so that
``tinyray --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Callable, NoReturn, Sequence

from tinyray.errors import Interrupted, UserError

EXAMPLES = {
    "tinyray": """examples:
  tinyray search --budget 200M                 # the whole search on this machine (local Ray, MLflow, built-in data)
  tinyray formula --budget 150M                # the tiny formula's network for a budget (after a search)
  tinyray export --budget 150M --out net150M   # that network as config.json + model.safetensors
  tinyray flops --r 0.84 --d 1.1 --w 0.75      # TinyNet-B: resolution, FLOPs, parameters
  tinyray train --r 0.5 --d 0.5 --w 0.5 --epochs 3
  tinyray publish tinyray-results/b200M        # send a search to MLflow after its tracking server was down
  tinyray data imagenet100 --src ~/imagenet --out ~/imagenet100   # the paper's ImageNet-100, linked, with a manifest""",
    "search": """examples:
  tinyray search --budget 200M                          # ~10 min on 2 CPUs: local Ray, built-in data, local MLflow
  tinyray search --budget 1.2G --trials 200 --max-epochs 30 --data ~/imagenet --address auto --gpus-per-trial 0.25
  tinyray search --budget 200M --data decoded:~/imagenet100 --gpus-per-trial 0.5 --cpus-per-trial 4 --precision fp16 --workers 3
  tinyray search --budget 100M --searcher random --scheduler fifo --name paper-protocol
  tinyray search --budget 100M --searcher optuna-nsga3 --scheduler asha --name optuna   # Optuna's NSGA-III
  tinyray search --budget 100M --searcher qnehvi --name qnehvi   # BoTorch's multi-objective Bayesian optimisation
  tinyray search --budget 200M --address auto --gpus-per-trial 0.25 --storage /mnt/tinyray/results --tracking-uri http://127.0.0.1:5000
      # on the head of a 'ray up clusters/v100.yaml' cluster: see the README, Cluster""",
    "formula": """examples:
  tinyray formula --budget 150M                                  # from the newest search in ./tinyray-results
  tinyray formula --budget 24M 52M 100M 202M 339M --from tinyray-results/b200M --num-classes 1000 --report
  tinyray formula --budget 2e8 --model-uri models:/tinynet-formula/1 --tracking-uri sqlite:///tinyray-results/mlflow.db""",
    "export": """examples:
  tinyray export --budget 100M --out tinynet-100M                     # config.json + untrained model.safetensors
  tinyray export --budget 100M --out tinynet-100M-trained --train-epochs 3""",
    "compare": """examples:
  tinyray compare --budget 100M                          # the newest search's formula against the obvious networks
  tinyray compare --budget 200M 100M --from tinyray-results/b200M --seeds 3
  tinyray compare --budget 100M --contenders formula,compound --seeds 1 --data synthetic:200/100 --epochs 1
  tinyray search --space resnet50 --budget 1G && tinyray compare --space resnet50 --budget 1G 500M
      # ResNet-50 shrunk: every contender is a ResNet-50, the formula from the search on resnet50""",
    "publish": """examples:
  tinyray publish tinyray-results/b200M                  # after the tracking server was down: send what it missed
  tinyray publish tinyray-results/b200M --tracking-uri http://127.0.0.1:5000""",
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
    "bench search": """examples:
  tinyray bench search --seeds 10 --methods a,b,c,d,f --processes 2 --out bench-results   # on the recorded landscape, ~3 min
  tinyray bench search --real --seeds 1 --trials 8 --max-epochs 3 --methods a,b   # through Ray on the real trainer""",
    "data imagenet100": """examples:
  tinyray data imagenet100 --src /datasets/imagenet --out ~/imagenet100         # the paper's protocol, seed 0
  tinyray data imagenet100 --src /datasets/imagenet --out ~/in100-s1 --seed 1 --link hardlink
  tinyray data imagenet100 --src ~/imagenet-object-localization-challenge --out ~/in100 --classes 10 --train-per-class 50""",
    "data verify": """example:
  tinyray data verify ~/imagenet100            # every file still there, of its size, linked to its source""",
    "bench train": """examples:
  tinyray bench train --r 1 --d 1 --w 1 --device cuda     # EfficientNet-B0 at 224 px, the paper recipe's batch 128
  tinyray bench train --r 0.5 --d 0.5 --w 0.5 --threads 1 --batch-size 16 --recipe proxy --repeats 9   # CPU
  tinyray bench train --r 0.5 --d 0.5 --w 0.5 --batch-size 32 --steps 10 --json""",
    "bench landscape": """examples:
  tinyray bench landscape                      # the shipped recording: what it holds, the surrogate's held-out error
  tinyray bench landscape --record --out landscape.csv   # re-record it (about 50 minutes on two idle cores)
  tinyray bench search --curves landscape.csv  # and play the search benchmark on it""",
    "bench overhead": """examples:
  tinyray bench overhead                        # the default search (200M, 30 trials) on this machine, broken down
  tinyray bench overhead --search-args '--pop-size 8' --out overhead-pop8""",
    "bench scale": """examples:
  tinyray bench scale --trials 500 --nodes 8 --gpus-per-node 4   # the issue's size: 128 slots, both MLflow backends
  tinyray bench scale --trials 100 --nodes 3 --tracking sqlite   # smaller: 48 slots, the sqlite store only""",
    "bench proxy": """examples:
  tinyray bench proxy --recorded                 # the shipped recordings: does a trial's top-1 rank like long training?
  tinyray bench proxy --out proxy-bench          # retrain the panel as default trials (~15 min), compare
  tinyray bench proxy --reference --out proxy-bench   # also re-record the long reference training (~1-2 h)""",
}


#: Upper bounds of the sizes a user gives (a larger one would allocate or loop until the machine gives up).
LIMITS = {
    "--trials": 100_000, "--max-epochs": 10_000, "--grace-period": 10_000, "--reduction-factor": 100,
    "--pop-size": 10_000, "--generations-ahead": 100, "--retries": 100, "--epochs": 100_000, "--train-epochs": 100_000, "--batch-size": 65_536,
    "--num-classes": 100_000, "--threads": 1024, "--seeds": 1000, "--first-seed": 1_000_000, "--workers": 1024, "--levels": 1000,
    "--port": 65535,
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


def _int_at_least(name: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type for a whole number of at least ``low`` (and at most ``high``: every size has a bound)."""
    high = LIMITS.get(name) if high is None else high

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text[:40]!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{name} must be at most {high}, got {text[:40]}")
        return value

    return parse


def _add_point(parser: argparse.ArgumentParser) -> None:
    from tinyray.space import space_help

    parser.add_argument("--r", type=_positive_float("--r"), required=True, help="resolution multiplier (input side floor(224 r))")
    parser.add_argument("--d", type=_positive_float("--d"), required=True, help="depth multiplier (blocks per stage)")
    parser.add_argument("--w", type=_positive_float("--w"), required=True, help="width multiplier (channels)")
    parser.add_argument("--space", default=None, help=space_help())


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

    formula = sub.add_parser("formula", help="the tiny formula: r, d, w of the best network for a FLOPs budget", epilog=EXAMPLES["formula"], formatter_class=fmt)
    formula.add_argument("--budget", nargs="+", default=None, help="FLOPs budget(s), e.g. 150M or 24M 52M 100M")
    _add_formula_source(formula)
    formula.add_argument("--report", action="store_true", help="also print the leave-one-out error of the GP against linear and log-linear fits")
    formula.add_argument("--json", action="store_true", help="print one JSON object")
    formula.set_defaults(func=cmd_formula)

    export = sub.add_parser("export", help="write the formula's network for a budget as config.json + model.safetensors", epilog=EXAMPLES["export"], formatter_class=fmt)
    export.add_argument("--budget", required=True, help="FLOPs budget, e.g. 100M")
    export.add_argument("--out", required=True, help="a new folder for config.json and model.safetensors")
    _add_formula_source(export)
    export.add_argument("--train-epochs", type=_int_at_least("--train-epochs", 0), default=0, help="train it this many epochs first (default 0: untrained)")
    export.add_argument("--data", default=None, help="training data with --train-epochs: 'synthetic' (default) or an image folder")
    export.add_argument("--seed", type=_int_at_least("--seed", 0), default=0, help="seed of the initialisation and training (default 0)")
    export.add_argument("--json", action="store_true", help="print one JSON object")
    export.set_defaults(func=cmd_export)

    compare = sub.add_parser("compare", help="the formula's network against compound scaling, one-dimension shrinks of the base and the search's best, at equal FLOPs", epilog=EXAMPLES["compare"], formatter_class=fmt)
    add = compare.add_argument
    add("--budget", nargs="+", required=True, help="FLOPs budget(s), e.g. 200M 100M")
    add("--space", default=None, help=_compare_space_help())
    add("--from", dest="source", default=None, help="the search's results folder (default: the newest search in --storage); the table, plot and runs go there")
    add("--model-uri", default=None, help="a published formula to use instead of the folder's (models:/tinynet-formula/1)")
    add("--tracking-uri", default=None, help="MLflow store (default: the search's)")
    add("--storage", default="tinyray-results", help="results root searched for the newest search when --from is not given")
    add("--contenders", default=",".join(_contender_names()), help=f"comma-separated subset of {','.join(_contender_names())} (default all)")
    add("--seeds", type=_int_at_least("--seeds", 1), default=3, help="trainings per contender, seeds 0..n-1 (default 3)")
    add("--data", default=None, help="training data (default: the search's), e.g. synthetic:200/100")
    add("--epochs", type=_int_at_least("--epochs", 1), default=None, help="epochs per training (default: the search's --max-epochs)")
    add("--address", default=None, help="a Ray cluster to join (default: RAY_ADDRESS or a local Ray, as a search)")
    add("--allow-outside", action="store_true", help="compare the formula's answer even outside its fitted range or the cube (labelled)")
    mode = compare.add_mutually_exclusive_group()
    mode.add_argument("--quiet", action="store_true", help="no progress lines")
    mode.add_argument("--json", action="store_true", help="print one JSON object")
    compare.set_defaults(func=cmd_compare)

    publish = sub.add_parser("publish", help="send a search's results folder to MLflow (what it missed while offline)", epilog=EXAMPLES["publish"], formatter_class=fmt)
    publish.add_argument("results_dir", metavar="RESULTS_DIR", help="the folder a search wrote, e.g. tinyray-results/b200M")
    publish.add_argument("--tracking-uri", default=None, help="MLflow store (default: the one the search used, else $MLFLOW_TRACKING_URI, else the sqlite store next to RESULTS_DIR)")
    publish.add_argument("--json", action="store_true", help="print one JSON object")
    publish.set_defaults(func=cmd_publish)

    flops = sub.add_parser("flops", help="resolution, FLOPs and parameters of one (r, d, w)", epilog=EXAMPLES["flops"], formatter_class=fmt)
    _add_point(flops)
    flops.add_argument("--num-classes", type=_int_at_least("--num-classes", 1), default=1000, help="classifier outputs (default 1000, as the paper counts)")
    flops.add_argument("--measure", action="store_true", help="also build the network and count it with torch's FLOP counter")
    flops.add_argument("--json", action="store_true", help="print one JSON object")
    flops.set_defaults(func=cmd_flops)

    train = sub.add_parser("train", help="train one (r, d, w) candidate and print its top-1", epilog=EXAMPLES["train"], formatter_class=fmt)
    _add_point(train)
    train.add_argument("--epochs", type=_int_at_least("--epochs", 1), default=3, help="epochs to train (default 3)")
    train.add_argument("--data", default=None, help="'synthetic' (default: built-in data, generated on the spot) or a folder with train/ and val/ class subfolders ('decoded:FOLDER': through a decode-once 256 px cache)")
    train.add_argument("--recipe", choices=("proxy", "paper"), default=None, help="training recipe (default: proxy on built-in data, paper on folders)")
    train.add_argument("--batch-size", type=_int_at_least("--batch-size", 1), default=None, help="batch size (default: the recipe's)")
    train.add_argument("--seed", type=_int_at_least("--seed", 0), default=0, help="random seed (default 0)")
    train.add_argument("--threads", type=_int_at_least("--threads", 1), default=None, help="torch CPU threads (default: torch's choice)")
    train.add_argument("--workers", type=_int_at_least("--workers", 0), default=None, help="data-loading processes for folder data (default: one less than --threads or the CPUs, at most 8)")
    train.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if there is one, else cpu)")
    train.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto", help="mixed precision (default auto: fp32 on CPU; on CUDA bf16 where the GPU has it, else fp16 with a loss scaler)")
    train.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="channels-last memory format (default on: faster on CPU and CUDA)")
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.set_defaults(func=cmd_train)

    bench = sub.add_parser("bench", help="benchmarks of tinyray itself (bench search: search efficiency)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", parser_class=_Parser, required=True)
    bench_search = bench_sub.add_parser(
        "search", help="hypervolume against compute: tinyray vs the paper's protocol, Optuna + ASHA, NSGA-III + ASHA",
        epilog=EXAMPLES["bench search"], formatter_class=fmt)
    _add_bench_options(bench_search)
    bench_search.set_defaults(func=cmd_bench_search)
    bench_train = bench_sub.add_parser(
        "train", help="images/s of tinyray's training loop against a plain PyTorch loop (same network, batch, in-memory data)",
        epilog=EXAMPLES["bench train"], formatter_class=fmt)
    _add_point(bench_train)
    add = bench_train.add_argument
    add("--recipe", choices=("proxy", "paper"), default="paper", help="training recipe of tinyray's loop and of the optimizer of both (default paper)")
    add("--batch-size", type=_int_at_least("--batch-size", 1), default=None, help="batch size (default: the recipe's)")
    add("--num-classes", type=_int_at_least("--num-classes", 2), default=100, help="classifier outputs (default 100, ImageNet-100)")
    add("--steps", type=_int_at_least("--steps", 1, 100_000), default=30, help="timed steps of each loop in a round (default 30, after 5 untimed)")
    add("--repeats", type=_int_at_least("--repeats", 1, 1000), default=5, help="timed rounds of each loop, taking turns (ABBA), and of each loader with --data; medians are reported (default 5)")
    add("--device", default=None, help="torch device (default: cuda if there is one, else cpu)")
    add("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto", help="as tinyray train --precision")
    add("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="channels-last memory format (default on)")
    add("--threads", type=_int_at_least("--threads", 1), default=None, help="torch CPU threads (default: torch's choice)")
    add("--data", default=None, help="also time the training loader of this image folder, from the files and from its decoded cache, at 0..--workers workers")
    add("--workers", type=_int_at_least("--workers", 0), default=None, help="with --data: most loader workers timed (default: one less than the CPUs, at most 8)")
    add("--batches", type=_int_at_least("--batches", 1, 100_000), default=20, help="with --data: batches timed per loader (default 20)")
    add("--json", action="store_true", help="print one JSON object")
    bench_train.set_defaults(func=cmd_bench_train)
    bench_proxy = bench_sub.add_parser(
        "proxy", help="proxy fidelity: rank correlation of a default trial's top-1 with a 12x longer training",
        epilog=EXAMPLES["bench proxy"], formatter_class=fmt)
    add = bench_proxy.add_argument
    add("--recorded", action="store_true", help="analyse the shipped recordings (benchdata/proxy_*.csv); train nothing")
    add("--reference", action="store_true", help="also re-record the reference training (long) instead of using the shipped one")
    add("--nets", type=_int_at_least("--nets", 5), default=None, help="only the first N panel networks (default all)")
    add("--seeds", type=_int_at_least("--seeds", 1), default=2, help="proxy runs per network, seeds 0..n-1 (default 2)")
    add("--processes", type=_int_at_least("--processes", 1), default=2, help="networks trained at once, one CPU thread each (default 2)")
    add("--data", default=None, help="'synthetic:TRAIN/VAL' to change the proxy's data (the reference scales with it)")
    add("--out", default="proxy-bench", help="folder for the recordings and proxy_fidelity.{csv,json,png} (default ./proxy-bench)")
    add("--json", action="store_true", help="print one JSON object")
    bench_proxy.set_defaults(func=cmd_bench_proxy)
    bench_landscape = bench_sub.add_parser(
        "landscape", help="the learning curves bench search plays on: 64 networks, 3x a default trial, 2 seeds; the GP surrogate's held-out error",
        epilog=EXAMPLES["bench landscape"], formatter_class=fmt)
    add = bench_landscape.add_argument
    add("--curves", default=None, help="a landscape recording to analyse (default: the shipped benchdata/landscape.csv)")
    add("--record", action="store_true", help="record the landscape into --out (about 1.5 hours of one CPU core; resumable: a rerun trains only what is missing)")
    add("--out", default="landscape.csv", help="with --record: the recording to write or continue (default ./landscape.csv)")
    add("--processes", type=_int_at_least("--processes", 1), default=2, help="with --record: networks trained at once, one CPU thread each (default 2)")
    add("--json", action="store_true", help="print one JSON object")
    bench_landscape.set_defaults(func=cmd_bench_landscape)
    bench_scale = bench_sub.add_parser(
        "scale", help="driver cost of a search of hundreds of replayed trials on a simulated multi-node GPU cluster",
        epilog=EXAMPLES["bench scale"], formatter_class=fmt)
    _add_scale_options(bench_scale)
    bench_scale.set_defaults(func=cmd_bench_scale)
    bench_overhead = bench_sub.add_parser(
        "overhead", help="where a real search's wall clock goes beside its trials' training: start-up, idle slots, finish; utilisation",
        epilog=EXAMPLES["bench overhead"], formatter_class=fmt)
    add = bench_overhead.add_argument
    add("--budget", default="200M", help="FLOPs budget of the search (default 200M)")
    add("--trials", type=_int_at_least("--trials", 1, LIMITS["--trials"]), default=30, help="trials of the search (default 30)")
    add("--seed", type=_int_at_least("--seed", 0), default=0, help="the search's seed (default 0)")
    add("--search-args", default="", help="further tinyray search options, quoted, e.g. '--max-epochs 3 --pop-size 8'")
    add("--out", default="overhead-bench", help="folder of the search, its MLflow store and overhead.json (default ./overhead-bench)")
    add("--json", action="store_true", help="print one JSON object")
    bench_overhead.set_defaults(func=cmd_bench_overhead)

    data = sub.add_parser("data", help="datasets on disk: the paper's ImageNet-100 subset of ImageNet-1k, and its check")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", parser_class=_Parser, required=True)
    _add_imagenet100_options(data_sub.add_parser(
        "imagenet100", help="link a seeded ImageNet-100 (100 classes, 500 training images each, all their val "
        "images) from ImageNet-1k into a new folder, with a manifest", epilog=EXAMPLES["data imagenet100"],
        formatter_class=fmt))
    verify = data_sub.add_parser("verify", help="check a subset against its manifest (exit 1 if anything differs)",
                                 epilog=EXAMPLES["data verify"], formatter_class=fmt)
    verify.add_argument("folder", metavar="DIR", help="the folder 'tinyray data imagenet100' wrote")
    verify.add_argument("--no-checksums", action="store_true", help="skip the SHA-256 of a manifest that has them (sizes and links only)")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(func=cmd_data_verify)

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


def _compare_space_help() -> str:
    from tinyray.space import available_spaces

    return (f"search space every contender is built in: a shipped one ({', '.join(available_spaces())}), a file in "
            f"./search_spaces/ by name, or a YAML path (default: the search's); the formula and the search's trials "
            f"must come from a search on it")


def _contender_names() -> list[str]:
    # the registry is a dict in a light module: importing it costs no torch, Ray or MLflow
    from tinyray.compare import CONTENDERS

    return list(CONTENDERS)


def _methods(text: str) -> tuple[str, ...]:
    from tinyray.bench import METHODS

    methods = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    if not methods or any(m not in METHODS for m in methods) or len(set(methods)) != len(methods):
        raise argparse.ArgumentTypeError(f"--methods must be a comma-separated subset of {','.join(METHODS)}, got {text!r}")
    return methods


def _add_bench_options(parser: argparse.ArgumentParser) -> None:
    from tinyray.bench import BenchConfig

    defaults = BenchConfig()
    add = parser.add_argument
    add("--budget", default="200M", help="FLOPs budget (default 200M)")
    add("--seeds", type=_int_at_least("--seeds", 1), default=defaults.seeds, help=f"runs per method, seeds 0..n-1 (default {defaults.seeds})")
    add("--first-seed", type=_int_at_least("--first-seed", 0), default=0, help="the first seed (default 0; e.g. 10 to tune settings on seeds other than the reported 0-9)")
    add("--trials", type=_int_at_least("--trials", 1), default=defaults.trials, help=f"compute of a run, in fully trained trials (default {defaults.trials}; with --real: trials per search)")
    add("--max-epochs", type=_int_at_least("--max-epochs", 1), default=defaults.max_epochs, help="full fidelity in epochs (default: all the recorded epochs, over which the recorded runs' schedules span; with --real, a default search's)")
    add("--grace-period", type=_int_at_least("--grace-period", 1), default=defaults.grace_period, help=f"first ASHA rung in epochs (default {defaults.grace_period})")
    add("--reduction-factor", type=_int_at_least("--reduction-factor", 2), default=defaults.reduction_factor, help=f"ASHA's eta (default {defaults.reduction_factor})")
    add("--pop-size", type=_int_at_least("--pop-size", 4), default=defaults.pop_size, help=f"NSGA-III population (default {defaults.pop_size})")
    add("--generations-ahead", type=_int_at_least("--generations-ahead", 0), default=defaults.generations_ahead, help=f"NSGA-III generations bred ahead, as tinyray search --generations-ahead (methods a and d; default {defaults.generations_ahead})")
    add("--workers", type=_int_at_least("--workers", 1), default=defaults.workers, help=f"simulated workers (default {defaults.workers})")
    add("--levels", type=_int_at_least("--levels", 2), default=defaults.levels, help=f"compute levels at which the hypervolume is measured (default {defaults.levels})")
    add("--methods", type=_methods, default=defaults.methods, help="which methods, e.g. a,b or a,e (e: qNEHVI + MOASHA; default a,b,c,d)")
    add("--curves", default=None, help="learning curves: a landscape recording (tinyray bench landscape) or a grid table (benchmarks/record_curves.py); default the shipped benchdata/landscape.csv")
    add("--processes", type=_int_at_least("--processes", 1), default=1, help="simulated runs at once, in worker processes (default 1; the result is the same for any number)")
    add("--real", action="store_true", help="run the methods through Ray on the real trainer instead of the simulator")
    add("--storage", default="tinyray-bench", help="results root of the --real searches (default ./tinyray-bench)")
    add("--data", default=None, help="--real: 'synthetic' (default) or a folder with train/ and val/")
    add("--out", default=None, help="folder for bench_curves.csv, bench_summary.csv and bench_hypervolume.png; simulated runs are recorded in OUT/runs as each ends, and a rerun with the same --out reuses them (resume, or add seeds and methods)")
    add("--json", action="store_true", help="print one JSON object")


def cmd_bench_search(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinyray.bench import BenchConfig, run_bench, run_real, write_outputs
    from tinyray.cost import parse_budget

    config = BenchConfig(
        budget=parse_budget(args.budget), seeds=args.seeds, first_seed=args.first_seed, trials=args.trials, max_epochs=args.max_epochs,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, pop_size=args.pop_size,
        generations_ahead=args.generations_ahead, workers=args.workers, levels=args.levels, methods=args.methods, curves=Path(args.curves) if args.curves else None,
    )
    if args.real:
        from dataclasses import replace

        from tinyray.bench import validate
        from tinyray.search import SearchConfig

        if config.max_epochs is None:
            config = replace(config, max_epochs=SearchConfig(budget=1).max_epochs)
        validate(config)
        result = run_real(config, Path(args.storage), args.data)
    else:
        result = run_bench(config, processes=args.processes, out=Path(args.out) if args.out else None,
                           log=None if args.json else sys.stderr)
    files = write_outputs(result, Path(args.out)) if args.out else {}
    if args.json:
        print(json.dumps({**result.to_json(), "files": {k: str(v) for k, v in files.items()}}))
    else:
        print(result.table())
        print(", ".join(f"{key} {value:.0%}" for key, value in result.wins.items()))
        for path in files.values():
            print(f"wrote {path}")
    return 0


def _backends(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _add_scale_options(parser: argparse.ArgumentParser) -> None:
    from tinyray.scale import ScaleConfig

    defaults = ScaleConfig()
    add = parser.add_argument
    add("--trials", type=_int_at_least("--trials", 1), default=defaults.trials, help=f"trials of the search (default {defaults.trials})")
    add("--nodes", type=_int_at_least("--nodes", 1, 64), default=defaults.nodes, help=f"raylets of the simulated cluster, the head included (default {defaults.nodes})")
    add("--gpus-per-node", type=_positive_float("--gpus-per-node"), default=defaults.gpus_per_node, help=f"GPUs each raylet declares; none need exist (default {defaults.gpus_per_node:g})")
    add("--gpus-per-trial", type=_positive_float("--gpus-per-trial"), default=defaults.gpus_per_trial, help=f"GPUs of one trial; 0.25 packs four trials a GPU (default {defaults.gpus_per_trial:g})")
    add("--cpus-per-trial", type=_positive_float("--cpus-per-trial"), default=defaults.cpus_per_trial, help=f"CPUs of one trial; each node declares what its GPU slots need (default {defaults.cpus_per_trial:g})")
    add("--max-epochs", type=_int_at_least("--max-epochs", 1), default=defaults.max_epochs, help=f"epochs of a fully trained trial (default {defaults.max_epochs})")
    add("--replay-speed", type=_positive_float("--replay-speed"), default=defaults.replay_speed, help=f"seconds a replayed trial sleeps per recorded second (default {defaults.replay_speed:g})")
    add("--budget", default="200M", help="FLOPs budget of the search (default 200M)")
    add("--searcher", default=defaults.searcher, help=f"the search's searcher (default {defaults.searcher})")
    add("--scheduler", default=defaults.scheduler, help=f"the search's scheduler (default {defaults.scheduler})")
    add("--pop-size", type=_int_at_least("--pop-size", 4), default=None, help="NSGA-III generation (default: the cluster's slots)")
    add("--generations-ahead", type=_int_at_least("--generations-ahead", 0), default=defaults.generations_ahead, help=f"NSGA-III generations bred ahead, as tinyray search --generations-ahead (default {defaults.generations_ahead})")
    add("--tracking", type=_backends, default=defaults.tracking, help="MLflow backends, a search each: sqlite,server (default both)")
    add("--resume-at", type=_int_at_least("--resume-at", 0, LIMITS["--trials"]), default=None, help="trials done when the driver is interrupted and resumed (default half; 0: never)")
    add("--seed", type=_int_at_least("--seed", 0), default=defaults.seed, help="the search's seed (default 0)")
    add("--out", default=str(defaults.out), help=f"folder of the runs and scale.json, scale_samples.csv, scale.png (default ./{defaults.out})")
    add("--json", action="store_true", help="print one JSON object")


def cmd_bench_scale(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinyray.cost import parse_budget
    from tinyray.scale import ScaleConfig, report, run_scale
    from tinyray.search import SCHEDULERS
    from tinyray.searchers import SEARCHERS

    if args.searcher not in SEARCHERS:
        raise UserError(f"--searcher {args.searcher!r} is not one of {list(SEARCHERS)}")
    if args.scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler {args.scheduler!r} is not one of {list(SCHEDULERS)}")
    config = ScaleConfig(
        trials=args.trials, nodes=args.nodes, gpus_per_node=args.gpus_per_node, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, max_epochs=args.max_epochs, replay_speed=args.replay_speed,
        budget=parse_budget(args.budget), searcher=args.searcher, scheduler=args.scheduler, pop_size=args.pop_size,
        generations_ahead=args.generations_ahead, tracking=args.tracking, resume_at=args.resume_at, seed=args.seed, out=Path(args.out),
    )
    result = run_scale(config)
    print(json.dumps(result, default=float) if args.json else report(result))
    return 0


def cmd_bench_overhead(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from tinyray.cost import parse_budget
    from tinyray.overhead import OverheadConfig, report, run_overhead

    extra = tuple(shlex.split(args.search_args))
    taken = {"--budget", "--trials", "--seed", "--name", "--storage", "--tracking-uri", "--json", "--quiet", "--resume"}
    clash = sorted({part.split("=")[0] for part in extra} & taken)
    if clash:
        raise UserError(f"--search-args may not set {', '.join(clash)}: bench overhead sets it (use its own options)")
    config = OverheadConfig(budget=parse_budget(args.budget), trials=args.trials, seed=args.seed, out=Path(args.out),
                            args=extra)
    result = run_overhead(config)
    print(json.dumps(result, default=float) if args.json else report(result))
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    import torch

    from dataclasses import asdict

    from tinyray.data import resolve_data
    from tinyray.space import load_space
    from tinyray.speed import bench_loading, bench_train

    device = _device(args.device)
    if args.data is not None and resolve_data(args.data).kind != "folder":
        raise UserError(f"--data {args.data}: bench train times the loader of an image folder; give its path")
    space = load_space(args.space)
    space.check_point(args.r, args.d, args.w)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    speed = bench_train(space, args.r, args.d, args.w, num_classes=args.num_classes, recipe=args.recipe,
                        batch_size=args.batch_size, steps=args.steps, repeats=args.repeats, device=device,
                        precision=None if args.precision == "auto" else args.precision,
                        channels_last=args.channels_last)
    loading = []
    if args.data is not None:
        from tinyray.data import default_workers

        most = default_workers() if args.workers is None else args.workers
        loading = bench_loading(resolve_data(args.data).path, resolution=speed.resolution,
                                batch_size=speed.batch_size, workers=tuple(range(most + 1)), batches=args.batches,
                               repeats=args.repeats)
    if args.json:
        print(json.dumps({**speed.as_dict(), "loading": [asdict(line) for line in loading]}))
        return 0
    print(f"{speed.device} {speed.precision}{' channels-last' if speed.channels_last else ''}, batch "
          f"{speed.batch_size} at {speed.resolution}px, {speed.repeats} rounds of {speed.steps} steps, medians: tinyray "
          f"{speed.tinyray:.1f} img/s, plain PyTorch {speed.plain:.1f} img/s; ratio {speed.ratio:.1%} (rounds "
          f"{speed.ratio_low:.1%}-{speed.ratio_high:.1%})")
    files = {line.workers: line.images_per_second for line in loading if line.source == "files"}
    for line in loading:
        if line.source == "decoded":
            per_worker = f", {line.images_per_second / line.workers:.1f} a worker" if line.workers else ""
            speedup = line.images_per_second / files[line.workers] if files[line.workers] else float("nan")
            print(f"loader, {line.workers} worker{'' if line.workers == 1 else 's'}, median of {args.repeats} rounds: files {files[line.workers]:.1f} "
                  f"img/s, decoded cache {line.images_per_second:.1f} img/s ({speedup:.2f}x){per_worker}")
    return 0


def cmd_bench_proxy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinyray import fidelity
    from tinyray.data import resolve_data

    out = Path(args.out)
    if args.recorded:
        if args.reference or args.data or args.nets:
            raise UserError("--recorded analyses the shipped recordings: drop --reference, --data and --nets")
        proxy, reference = fidelity.read_runs(fidelity.PROXY_FILE), fidelity.read_runs(fidelity.REFERENCE_FILE)
        protocol = fidelity.default_protocol()
        fidelity.check_comparable(protocol, reference)
        fidelity.check_proxy_runs(protocol, proxy)
    else:
        protocol = fidelity.default_protocol(resolve_data(args.data) if args.data else None)
        nets = fidelity.panel(num_classes=protocol.data.num_classes)[: args.nets or None]
        command = "tinyray " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "tinyray bench proxy"
        quiet = open(os.devnull, "w") if args.json else sys.stderr
        if args.reference:  # the long part first: a proxy recipe can be retuned against it later
            reference = fidelity.record(fidelity.reference_protocol(protocol), nets, fidelity.REFERENCE_SEEDS,
                                        out / "proxy_reference.csv", processes=args.processes, command=command,
                                        log=quiet)
        else:
            reference = fidelity.read_runs(fidelity.REFERENCE_FILE)
            fidelity.check_comparable(protocol, reference)
        proxy = fidelity.record(protocol, nets, range(args.seeds), out / "proxy_runs.csv",
                                processes=args.processes, command=command, log=quiet)
    result = fidelity.analyse(proxy, reference, num_classes=protocol.data.num_classes)
    files = fidelity.write_outputs(result, out)
    if args.json:
        print(json.dumps({**result.to_json(), "files": {k: str(v) for k, v in files.items()}}, default=str))
    else:
        print(result.table())
        for path in files.values():
            print(f"wrote {path}")
    return 0


def cmd_bench_landscape(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinyray import landscape
    from tinyray.bench import surrogate_text

    if args.record:
        if args.curves:
            raise UserError("--record writes --out: drop --curves (or analyse that file without --record)")
        command = "tinyray " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "tinyray bench landscape --record"
        landscape.record_landscape(Path(args.out), processes=args.processes, command=command,
                                   log=open(os.devnull, "w") if args.json else sys.stderr)
        path = Path(args.out)
    else:
        path = Path(args.curves) if args.curves else landscape.LANDSCAPE_FILE
    fitted = landscape.Landscape.load(path)
    summary = fitted.summary()
    held_out = fitted.held_out()
    if args.json:
        shown = str(path) if args.record or args.curves else "tinyray/benchdata/landscape.csv (shipped)"
        print(json.dumps({"file": shown, "summary": summary, "held_out": held_out.to_dict(orient="records")}))
    else:
        print(landscape.summary_text(summary))
        print(surrogate_text(held_out))
    return 0


def _add_imagenet100_options(parser: argparse.ArgumentParser) -> None:
    from tinyray.imagenet import DEFAULT_CLASSES, DEFAULT_TRAIN_PER_CLASS, LINK_MODES

    add = parser.add_argument
    add("--src", required=True, help="ImageNet-1k: a folder with train/<wnid>/*.JPEG and val/ (val/<wnid>/, or flat with LOC_val_solution.csv), or the Kaggle root")
    add("--out", required=True, help="a new (or empty) folder for the subset: train/<wnid>/, val/<wnid>/ and manifest.json")
    add("--seed", type=_int_at_least("--seed", 0), default=0, help="seed of the class and image draws (default 0)")
    add("--classes", type=_int_at_least("--classes", 1, 100_000), default=DEFAULT_CLASSES, help=f"classes drawn (default {DEFAULT_CLASSES})")
    add("--train-per-class", type=_int_at_least("--train-per-class", 1, 100_000), default=DEFAULT_TRAIN_PER_CLASS, help=f"training images drawn per class (default {DEFAULT_TRAIN_PER_CLASS}); every val image of a class is kept")
    add("--link", choices=LINK_MODES, default=LINK_MODES[0], help="how the subset's files point at the source's: symlink (default), hardlink (same file system) or copy")
    add("--val-labels", default=None, help="labels of a flat val/: LOC_val_solution.csv or lines 'IMAGE WNID' (default: LOC_val_solution.csv if the source has it)")
    add("--checksums", action="store_true", help="also record every file's SHA-256 in the manifest (reads each file once)")
    add("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=cmd_data_imagenet100)


def cmd_data_imagenet100(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinyray.imagenet import SubsetConfig, build_subset

    config = SubsetConfig(
        src=Path(args.src), out=Path(args.out), seed=args.seed, classes=args.classes,
        train_per_class=args.train_per_class, link=args.link,
        val_labels=Path(args.val_labels) if args.val_labels else None, checksums=args.checksums,
    )
    result = build_subset(config)
    print(json.dumps(result.as_dict()) if args.json else result.line())
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the subset matches its manifest, 1 when it differs (2, as always, when it cannot be checked)."""
    from tinyray.imagenet import verify_subset

    report = verify_subset(args.folder, checksums=not args.no_checksums)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _add_search_options(parser: argparse.ArgumentParser) -> None:
    from tinyray.replay import TRAINERS
    from tinyray.search import SCHEDULERS, SearchConfig
    from tinyray.searchers import SEARCHERS, searcher_help
    from tinyray.space import space_help
    from tinyray.train import PRECISIONS

    defaults = SearchConfig(budget=1)
    add = parser.add_argument
    add("--budget", default=None, help="FLOPs budget: multiply-accumulates of one image, e.g. 200M, 1.2G, 2e8 (required unless --resume)")
    add("--name", default=None, help="search name: results folder, Tune and MLflow experiment (default: b<budget>, e.g. b200M)")
    add("--storage", default=str(defaults.storage), help=f"results root (default ./{defaults.storage}); on a cluster, a folder every node sees (NFS, EFS)")
    add("--space", default=None, help=space_help())
    add("--data", default=None, help="'synthetic' (default, built-in; 'synthetic:300/100' sets its train/val sizes) or a folder with train/ and val/ class subfolders ('decoded:FOLDER': decoded once per node into a 256 px cache the trials share)")
    add("--trials", type=_int_at_least("--trials", 1), default=defaults.trials, help=f"number of trials (default {defaults.trials})")
    add("--max-epochs", type=_int_at_least("--max-epochs", 1), default=defaults.max_epochs, help=f"epochs of a fully trained trial (default {defaults.max_epochs})")
    add("--grace-period", type=_int_at_least("--grace-period", 1), default=defaults.grace_period, help=f"ASHA's first rung in epochs (default {defaults.grace_period})")
    add("--reduction-factor", type=_int_at_least("--reduction-factor", 2), default=defaults.reduction_factor, help=f"ASHA's eta (default {defaults.reduction_factor})")
    add("--searcher", choices=list(SEARCHERS), default=defaults.searcher, help=searcher_help())
    add("--scheduler", choices=SCHEDULERS, default=defaults.scheduler, help=f"asha (Ray's ASHA, by top1), moasha (multi-objective ASHA over top1 and FLOPs) or fifo (train every trial fully); default {defaults.scheduler}")
    add("--seed", type=_int_at_least("--seed", 0), default=defaults.seed, help="seed of the searcher and the trials (default 0)")
    add("--floor", default=None, help="lowest FLOPs of a candidate (default budget/16), e.g. 12M")
    add("--pop-size", type=_int_at_least("--pop-size", 4), default=defaults.pop_size, help=f"NSGA-III population (default {defaults.pop_size})")
    add("--generations-ahead", type=_int_at_least("--generations-ahead", 0), default=None, help="NSGA-III generations bred before the oldest one's results are in (default 1 for nsga3, 0 for the other searchers; 1: a slot freed near a generation's end takes a member of the next one; 0 makes it wait for the generation's last trial; a cluster with more slots than a generation wants 2)")
    add("--cpus-per-trial", type=_positive_float("--cpus-per-trial"), default=defaults.cpus_per_trial, help="CPUs of one trial (default 1)")
    add("--gpus-per-trial", type=_float_option("--gpus-per-trial", allow_zero=True), default=defaults.gpus_per_trial, help="GPUs of one trial, fractions share a GPU (default 0)")
    add("--recipe", choices=("proxy", "paper"), default=None, help="training recipe (default: proxy on built-in data, paper on folders)")
    add("--address", default=None, help="Ray cluster to join ('auto' or host:port; default $RAY_ADDRESS or a local Ray)")
    add("--tracking-uri", default=None, help="MLflow tracking server (default $MLFLOW_TRACKING_URI or a sqlite store in --storage)")
    add("--retries", type=_int_at_least("--retries", 0), default=defaults.retries, help=f"retries of a failed trial from its last checkpoint (default {defaults.retries})")
    add("--precision", choices=("auto", *PRECISIONS), default="auto", help="every trial's precision, as tinyray train --precision (default auto: fp32 on CPU; on CUDA bf16 where the GPU has it, else fp16 with a loss scaler)")
    add("--workers", type=_int_at_least("--workers", 0), default=None, help="data-loading processes of every trial for folder data (default: one less than --cpus-per-trial, at most 8; 0: in the trial's process)")
    add("--channels-last", action=argparse.BooleanOptionalAction, default=defaults.channels_last, help="channels-last memory format in every trial (default on)")
    add("--resume", action="store_true", help="continue the search --name after its driver died; finished trials are kept")
    add("--formula-name", default=None, help="MLflow registered model the search's formula is published under (default tinynet-formula; tinynet-formula-SPACE for a --space other than efficientnet_b0)")
    add("--trainer", choices=TRAINERS, default=defaults.trainer, help="train (default: train every trial) or replay: report recorded learning curves instead of training, to rehearse the machinery at scale (tinyray bench scale); every record of the search says replay")
    add("--replay-speed", type=_float_option("--replay-speed"), default=defaults.replay_speed, help=f"with --trainer replay: seconds slept per recorded second of training (default {defaults.replay_speed})")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quiet", action="store_true", help="no progress display")
    mode.add_argument("--json", action="store_true", help="progress as JSON lines, then one JSON summary")


def _add_formula_source(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--from", dest="source", default=None, help="a search's results folder, or a front CSV (front.csv, trials.csv, or columns r, d, w and flops or c)")
    add("--model-uri", default=None, help="a published formula: models:/tinynet-formula/1 or runs:/<run id>/formula_model")
    add("--tracking-uri", default=None, help="MLflow store of --model-uri (default $MLFLOW_TRACKING_URI or the store in --storage)")
    add("--storage", default="tinyray-results", help="results root searched for the newest formula when neither --from nor --model-uri is given")
    add("--space", default=None, help="search space of a bare front CSV (default: the search's, else efficientnet_b0)")
    add("--num-classes", type=_int_at_least("--num-classes", 1), default=None, help="classifier outputs the answer's FLOPs count (default: the search's)")
    add("--allow-outside", action="store_true", help="answer a budget outside the fitted range, or with r, d or w outside the cube, instead of refusing (the answer says what is outside)")


def _load_formula(args: argparse.Namespace) -> tuple[Any, str]:
    """The formula a ``formula``/``export`` command asks for (see :func:`_add_formula_source`), and what was read.

    What was read (the ``formula.json`` file, the front CSV or folder, the model URI) is named rather than the
    formula's own ``source``, which records where the front was when it was fitted: a copied results folder or a
    published model keeps the old path.
    """
    import os
    from pathlib import Path

    from tinyray.formula import Formula, find_formula, fit_formula, load_from_uri, load_front

    if args.source and args.model_uri:
        raise UserError("give either --from or --model-uri, not both")
    if args.model_uri:
        tracking = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        store = Path(args.storage).expanduser() / "mlflow.db"
        if not tracking and store.is_file():
            from tinyray.tracking import local_tracking_uri

            tracking = local_tracking_uri(Path(args.storage))
        return load_from_uri(args.model_uri, tracking), args.model_uri
    if args.source:
        source = Path(args.source).expanduser()
        if source.is_dir() and (source / "formula.json").is_file() and args.space is None:
            return Formula.load(source / "formula.json"), str(source / "formula.json")
        front = load_front(source, space=args.space)
        return fit_formula(front.points, front.space, front.num_classes, source=front.where), front.where
    found = find_formula(Path(args.storage))
    if found is None:
        raise UserError(f"no formula found in {args.storage}: run 'tinyray search --budget 200M' first, "
                        f"or give --from RESULTS_DIR or --model-uri URI")
    return Formula.load(found), str(found)


def cmd_formula(args: argparse.Namespace) -> int:
    from tinyray.cost import format_flops, parse_budget
    from tinyray.formula import refuse_outside

    if not args.budget and not args.report:
        raise UserError("give --budget (e.g. --budget 150M) or --report")
    budgets = [parse_budget(text) for text in args.budget or []]
    formula, read = _load_formula(args)
    answers = [refuse_outside(formula.answer(budget, args.num_classes), args.allow_outside) for budget in budgets]
    low, high = formula.c_range
    curves = {target: f"gp {curve.inputs} {curve.kernel}" for target, curve in formula.curves.items()}
    if args.json:
        print(json.dumps({"source": read, "points": len(formula.points), "c_range": [low, high],
                          "curves": curves, "answers": [answer.as_dict() for answer in answers],
                          **({"loo": formula.loo} if args.report else {})}))
        return 0
    base = formula.base_flops
    print(f"tiny formula from {read}: {formula.points_note()}, "
          f"c in [{low:.3f}, {high:.3f}] ({format_flops(low * base)}-{format_flops(high * base)} FLOPs); "
          f"r: {curves['r']}, d: {curves['d']}; bands are 95%")
    for answer in answers:
        print("  " + answer.line())
    if args.report:
        import pandas as pd

        table = pd.DataFrame(formula.loo)
        print("leave-one-out RMSE on the front (lower is better):")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinyray.cost import format_flops, parse_budget
    from tinyray.export import check_out, export_network
    from tinyray.formula import refuse_outside

    budget = parse_budget(args.budget)
    out = check_out(Path(args.out))  # before the formula is loaded or anything trained
    formula, _ = _load_formula(args)
    classes = args.num_classes or formula.num_classes
    state, extra = None, {}
    if args.train_epochs:
        from tinyray.data import load_data
        from tinyray.search import default_recipe
        from tinyray.train import train_candidate

        data = load_data(args.data)
        if args.num_classes and args.num_classes != data.num_classes:
            raise UserError(f"--num-classes {args.num_classes} differs from the {data.num_classes} classes of {data.name}: drop --num-classes")
        classes = data.num_classes
    answer = refuse_outside(formula.answer(budget, classes), args.allow_outside)
    if args.train_epochs:
        recipe = default_recipe(data)
        final: dict[str, Any] = {}

        def keep(epoch: Any, checkpoint: Any) -> None:
            print(f"epoch {epoch.epoch}/{args.train_epochs}  top1 {epoch.top1:.4f}", file=sys.stderr, flush=True)
            if epoch.epoch == args.train_epochs:
                saved = checkpoint()
                final["state"] = saved["ema"] if saved["ema"] is not None else saved["model"]

        result = train_candidate(formula.space, answer.r, answer.d, answer.w, data, epochs=args.train_epochs,
                                 recipe=recipe, seed=args.seed, callback=keep)
        state = final["state"]
        extra = {"training": {"data": data.name, "recipe": recipe, "epochs": args.train_epochs, "seed": args.seed,
                              "train_resolution": result.resolution, "top1": result.final_top1}}
    else:
        import torch

        torch.manual_seed(args.seed)
    folder = export_network(formula.space, answer.r, answer.d, answer.w, out, num_classes=classes, state_dict=state,
                            extra={"formula": answer.as_dict(), **extra})
    if args.json:
        print(json.dumps({"out": str(folder), **answer.as_dict(), "trained": state is not None}))
    else:
        print(f"{format_flops(budget)} -> r={answer.r:.3f} d={answer.d:.3f} w={answer.w:.3f} ({answer.resolution} px, "
              f"{format_flops(answer.flops)} FLOPs, {answer.params / 1e6:.2f}M params), "
              f"{'trained' if state is not None else 'untrained'}: {folder}/config.json, model.safetensors"
              + (f" (OUTSIDE: {answer.outside})" if answer.outside else ""))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinyray.cost import format_flops, parse_budget
    from tinyray.search import SearchConfig, resume_config, run_search

    budget = parse_budget(args.budget) if args.budget is not None else None
    floor = parse_budget(args.floor) if args.floor is not None else None
    options = dict(
        space=args.space, data=args.data, trials=args.trials, max_epochs=args.max_epochs,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, searcher=args.searcher,
        scheduler=args.scheduler, seed=args.seed, floor=floor, pop_size=args.pop_size,
        generations_ahead=args.generations_ahead, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, recipe=args.recipe,
        address=args.address, tracking_uri=args.tracking_uri, formula_name=args.formula_name, retries=args.retries,
        trainer=args.trainer, replay_speed=args.replay_speed,
        precision=None if args.precision == "auto" else args.precision, workers=args.workers,
        channels_last=args.channels_last, progress="json" if args.json else "quiet" if args.quiet else "live",
    )
    for option, value in (("--name", args.name), ("--storage", args.storage)):
        if value is not None and not value.strip():
            raise UserError(f"{option} is empty: give a value, or leave {option} out for the default")
    if args.resume:
        if not args.name and budget is None:
            raise UserError("--resume needs the --name of the search to continue, e.g. --resume --name b200M")
        defaults = SearchConfig(budget=1)
        # only what the user typed counts: an option left at its default takes the search's stored value
        given = {key: value for key, value in options.items() if value != getattr(defaults, key)}
        given["progress"] = options["progress"]
        if budget is not None:
            given["budget"] = budget
        config = resume_config(Path(args.storage), args.name if args.name is not None else f"b{format_flops(budget)}",
                               given)
    else:
        if budget is None:
            raise UserError("--budget is required, e.g. --budget 200M (or continue a search with --resume --name NAME)")
        name = args.name if args.name is not None else f"b{format_flops(budget)}"
        config = SearchConfig(budget=budget, name=name, storage=Path(args.storage),
                              **options)
    try:
        result = run_search(config, resume=args.resume)
    except KeyboardInterrupt:  # outside the Tune experiment (which run_search handles): say how to go on, if it can
        from tinyray.search import resume_command

        if not (config.results_dir / "search.json").is_file():
            raise
        raise Interrupted(f"search {config.name!r} stopped; continue it with: {resume_command(config)}") from None
    if args.json:
        print(json.dumps(result.summary()))
    else:
        print(result.report())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinyray.compare import CompareConfig, Context, check_space, run_compare, searches_on
    from tinyray.cost import format_flops, parse_budget
    from tinyray.formula import Formula, find_formula, load_from_uri
    from tinyray.report import read_results
    from tinyray.search import default_recipe, resume_config
    from tinyray.space import load_space
    from tinyray.tracking import local_artifact_root, local_tracking_uri

    budgets = tuple(dict.fromkeys(parse_budget(text) for text in args.budget))
    names = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = [name for name in names if name not in _contender_names()]
    if unknown or not names:
        raise UserError(f"--contenders {args.contenders!r}: {', '.join(unknown) or 'none given'} not among "
                        f"{','.join(_contender_names())}")
    chosen = load_space(args.space) if args.space is not None else None
    space_option = f" --space {args.space}" if chosen else ""
    search_first = f"run 'tinyray search{space_option} --budget {format_flops(max(budgets))}' first"
    if args.source:
        folder = Path(args.source).expanduser()
        if not folder.is_dir():
            raise UserError(f"results folder {folder} does not exist: give --from the folder a search wrote (<storage>/<name>)")
        where = f"the search in {folder}"
    else:
        found = find_formula(Path(args.storage))
        if found is None:
            raise UserError(f"no search with a formula in {args.storage}: {search_first}, or give --from RESULTS_DIR")
        folder = found.parent
        where = f"the newest search in {args.storage} ({folder.name})"
    folder = folder.resolve()
    if not (folder / "search.json").is_file():
        raise UserError(f"{folder} has no search.json: give --from the results folder of a tinyray search")
    search = resume_config(folder.parent, folder.name, {})
    tracking = args.tracking_uri or search.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if args.model_uri:
        formula = load_from_uri(args.model_uri, tracking or local_tracking_uri(folder.parent))
    elif (folder / "formula.json").is_file():
        formula = Formula.load(folder / "formula.json")
    else:
        raise UserError(f"{folder} has no formula.json (its front was too small to fit one): give --model-uri, or search with more --trials")
    space = chosen or load_space(search.space)
    if args.model_uri:
        fix = f"give --model-uri a formula fitted on {space.name}, or leave --model-uri out"
        check_space(space, formula, None, f"--model-uri {args.model_uri}", fix)
    if chosen is None:  # the search's own space, but its file has changed since the search
        fix = "give --space a space file with the definition the search used (formula.json keeps it as space_definition)"
    else:
        matching = [path for path in searches_on(folder.parent, space) if path != folder]
        fix = (f"give --from {matching[0]} (a search on {space.name})" if matching
               else f"{search_first}, or give --from the results folder of a search on {space.name}")
    searched = json.loads((folder / "search.json").read_text()).get("space")
    check_space(space, formula, searched, where, fix)
    from tinyray.data import SYNTHETIC, load_data, resolve_data

    spec = resolve_data(args.data if args.data is not None else search.data)
    data = load_data(spec)  # generated and cached once here, before the Ray tasks read it
    recipe = search.recipe if args.data is None and search.recipe else default_recipe(spec)
    val_size = spec.val_size if spec.kind == SYNTHETIC else sum(1 for p in (Path(spec.path) / "val").rglob("*") if p.is_file())
    config = CompareConfig(
        budgets=budgets, results_dir=folder, contenders=tuple(names), seeds=args.seeds, data=spec,
        epochs=args.epochs or search.max_epochs, recipe=recipe, space=str(space.source),
        tracking_uri=tracking or local_tracking_uri(folder.parent), experiment=search.name,
        artifact_location=None if tracking else local_artifact_root(folder.parent),
        address=args.address or search.address, cpus_per_trial=search.cpus_per_trial, quiet=args.quiet or args.json,
        data_name=data.name, val_size=val_size,
    )
    ctx = Context(space, data.num_classes, formula, read_results(folder).trials, args.allow_outside)
    result = run_compare(config, ctx)
    print(json.dumps(result.as_dict(), default=str) if args.json else result.text())
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinyray.publish import publish

    report = publish(Path(args.results_dir), args.tracking_uri)
    print(json.dumps(report.as_dict()) if args.json else report.line())
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


def _device(name: str | None) -> str:
    """The torch device ``--device`` names (default ``cuda`` if torch sees a GPU, else ``cpu``), checked."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name!r} is not a torch device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: torch sees no CUDA GPU here; use --device cpu")
    return name


def cmd_train(args: argparse.Namespace) -> int:
    from tinyray.cost import analytic_cost, format_flops
    from tinyray.data import load_data
    from tinyray.space import load_space
    from tinyray.search import default_recipe
    from tinyray.train import default_precision, train_candidate

    import os

    if args.threads is not None and args.threads > (os.cpu_count() or 1):
        raise UserError(f"--threads {args.threads} exceeds the {os.cpu_count()} CPUs of this machine: lower it")
    device = _device(args.device)
    precision = default_precision(device) if args.precision == "auto" else args.precision
    space = load_space(args.space)
    space.check_point(args.r, args.d, args.w)
    data = load_data(args.data)
    recipe = args.recipe or default_recipe(data)
    cost = analytic_cost(space, args.r, args.d, args.w, data.num_classes)

    def report(epoch: Any, checkpoint: Any) -> None:
        if not args.json:
            print(f"epoch {epoch.epoch}/{args.epochs}  top1 {epoch.top1:.4f}  val_loss {epoch.val_loss:.4f}  "
                  f"{epoch.images_per_second:.0f} img/s"
                  + (f"  {epoch.skipped_images} unreadable images skipped" if epoch.skipped_images else ""),
                  file=sys.stderr, flush=True)

    result = train_candidate(
        space, args.r, args.d, args.w, data,
        epochs=args.epochs, recipe=recipe, seed=args.seed, batch_size=args.batch_size,
        threads=args.threads, workers=args.workers, device=device, callback=report,
        precision=precision, channels_last=args.channels_last,
    )
    out = {
        "space": space.name, "r": args.r, "d": args.d, "w": args.w, **cost.as_dict(),
        "train_resolution": result.resolution, "data": data.name, "recipe": recipe,
        "epochs": result.epochs_trained, "top1": result.final_top1, "best_top1": result.best_top1,
        "train_seconds": round(result.train_seconds, 2), "device": device, "precision": precision,
        "skipped_images": result.history[-1].skipped_images if result.history else 0,
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
    command = " ".join(filter(None, (args.command, getattr(args, "bench_command", None),
                                     getattr(args, "data_command", None))))
    try:
        return args.func(args)
    except UserError as exc:
        # a path that is not UTF-8 (surrogate escapes) must not turn the one line into an encoding traceback
        print(f"tinyray {command}: error: {str(exc).encode('utf-8', 'backslashreplace').decode('utf-8')}",
              file=sys.stderr)
        return UserError.exit_code
    except Interrupted as exc:
        print(f"tinyray {command}: interrupted: {exc}", file=sys.stderr)
        return Interrupted.exit_code
    except KeyboardInterrupt:
        print(f"tinyray {command}: interrupted", file=sys.stderr)
        return Interrupted.exit_code


if __name__ == "__main__":
    sys.exit(main())
