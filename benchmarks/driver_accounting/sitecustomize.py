"""Where a search driver's CPU goes, by component, as trials finish: put this folder first on PYTHONPATH and set
ACCT_OUT=FILE; every `tinyray search --trainer ...` process (as `tinyray bench scale` starts its drivers) wraps Tune's
controller step and its parts, tinyray's callbacks, scheduler and searcher, and times each (thread CPU of the main
thread, inclusive: a callback's time is also inside Tune's step), the process's CPU (all threads) and the garbage
collector, and appends one JSON line {"pid", "rows"} to FILE when it exits, a row every 25 finished trials.

    ACCT_OUT=/tmp/acct.jsonl PYTHONPATH=benchmarks/driver_accounting:. tinyray bench scale --trials 300 \
        --nodes 3 --tracking server --resume-at 0 --out /tmp/s300
    python benchmarks/driver_accounting/show.py /tmp/acct.jsonl 50      # ms a trial, per window of 50 trials

What it found (docs/benchmarks.md, session 18): the process's CPU outside the main thread grew with the trials
(Tune's copy of its staging folder at every snapshot), the main thread's did not.
"""
import atexit, gc, importlib.abc, importlib.util, json, os, sys, time, threading

OUT = os.environ.get("ACCT_OUT")
cum = {}
state = {"done": 0, "rows": [], "gc_t0": 0.0}
MAIN = threading.main_thread()

def wrap(cls, name, bucket):
    orig = getattr(cls, name)
    def f(*a, **k):
        if threading.current_thread() is not MAIN:
            return orig(*a, **k)
        t = time.thread_time()
        try:
            return orig(*a, **k)
        finally:
            cum[bucket] = cum.get(bucket, 0.0) + time.thread_time() - t
    setattr(cls, name, f)

def snap():
    row = {"done": state["done"], "proc": time.process_time(), "main": time.thread_time(), **cum}
    state["rows"].append(row)

PATCHES = {
    "ray.tune.execution.tune_controller": lambda m: [
        wrap(m.TuneController, "step", "step"),
        wrap(m.TuneController, "checkpoint", "checkpoint"),
        wrap(m.TuneController, "_maybe_add_actors", "add_actors"),
        wrap(m.TuneController, "_maybe_update_trial_queue", "update_queue"),
    ],
    "ray.air.execution._internal.actor_manager": lambda m: [wrap(m.RayActorManager, "next", "actor_next")],
    "tinyray.tune.callbacks": lambda m: [
        wrap(m.TrackingCallback, "on_trial_start", "trk_start"),
        wrap(m.TrackingCallback, "on_trial_result", "trk_result"),
        wrap(m.TrackingCallback, "on_trial_complete", "trk_complete"),
        wrap(m.MonitorCallback, "on_trial_complete", "monitor_complete"),
        wrap(m.MonitorCallback, "on_trial_result", "monitor_result"),
    ],
    "tinyray.tune.scheduler": lambda m: [
        wrap(m.MOASHAScheduler, "on_trial_result", "sched_result"),
        wrap(m.MOASHAScheduler, "on_trial_complete", "sched_complete"),
        wrap(m.MOASHAScheduler, "choose_trial_to_run", "sched_choose"),
    ],
    "tinyray.tune.searcher": lambda m: [
        wrap(m.TinySearcher, "suggest", "search_suggest"),
        wrap(m.TinySearcher, "on_trial_complete", "search_complete"),
        wrap(m.TinySearcher, "save_to_dir", "search_save"),
    ],
    "ray.tune.logger.json": lambda m: [wrap(m.JsonLoggerCallback, "log_trial_result", "json_result")],
    "ray.tune.logger.csv": lambda m: [wrap(m.CSVLoggerCallback, "log_trial_result", "csv_result")],
    "ray.tune.callback": lambda m: [wrap(m.CallbackList, "on_trial_result", "cbs_result"),
                                     wrap(m.CallbackList, "on_trial_complete", "cbs_complete")],
}

def _count(m):
    orig = m.TrackingCallback.on_trial_complete
    def f(self, *a, **k):
        r = orig(self, *a, **k)
        state["done"] += 1
        if state["done"] % 25 == 0:
            snap()
        return r
    m.TrackingCallback.on_trial_complete = f

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        self.skip = getattr(self, "skip", set())
        if name in self.skip:
            return None
        self.skip.add(name)
        spec = importlib.util.find_spec(name)
        if spec is None:
            return None
        exec_module = spec.loader.exec_module
        def run(module, name=name):
            exec_module(module)
            try:
                PATCHES[name](module)
                if name == "tinyray.tune.callbacks":
                    _count(module)
            except Exception as e:
                print("ACCT patch failed", name, e, file=sys.stderr)
        spec.loader.exec_module = run
        return spec

def gccb(phase, info):
    if threading.current_thread() is not MAIN:
        return
    if phase == "start":
        state["gc_t0"] = time.thread_time()
    else:
        cum["gc"] = cum.get("gc", 0.0) + time.thread_time() - state["gc_t0"]
        k = f"gc{info.get('generation')}"
        cum[k] = cum.get(k, 0.0) + time.thread_time() - state["gc_t0"]

if "search" in sys.argv and "--trainer" in sys.argv and OUT:
    sys.meta_path.insert(0, Finder())
    gc.callbacks.append(gccb)
    def report():
        snap()
        with open(OUT, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "rows": state["rows"]}) + "\n")
    atexit.register(report)
