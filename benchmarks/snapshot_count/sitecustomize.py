"""Count Tune's experiment snapshots of a search driver: put this folder first on PYTHONPATH and set SNAPCOUNT_OUT=FILE;
every `tinyray search --trainer ...` process (as `tinyray bench scale` starts its drivers) appends
"PID snapshots N cpu SECONDS" (calls of TuneController.save_to_dir and their CPU) to FILE when it exits.

    SNAPCOUNT_OUT=/tmp/snaps.txt PYTHONPATH=benchmarks/snapshot_count:. tinyray bench scale --trials 100 ...
"""
import atexit, importlib.abc, importlib.util, os, sys, time

TARGET = "ray.tune.execution.tune_controller"
stats = {"n": 0, "s": 0.0}


def _patch(module):
    orig = module.TuneController.save_to_dir

    def save_to_dir(self):
        t = time.process_time(); orig(self); stats["s"] += time.process_time() - t; stats["n"] += 1

    module.TuneController.save_to_dir = save_to_dir


class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def run(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = run
        return spec


if "search" in sys.argv and "--trainer" in sys.argv and os.environ.get("SNAPCOUNT_OUT"):
    sys.meta_path.insert(0, Finder())

    def report():
        with open(os.environ["SNAPCOUNT_OUT"], "a") as f:
            f.write(f"{os.getpid()} snapshots {stats['n']} cpu {stats['s']:.2f}\n")

    atexit.register(report)
