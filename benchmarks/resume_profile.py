"""Profile a resumed search's driver (issue 20): 60 replayed trials on one simulated raylet of 16 slots, Ctrl-C
after 30, then `tinyray search --resume` under py-spy (raw collapsed stacks, 100 Hz) until its end.

    pip install py-spy
    PYTHONPATH=. python benchmarks/resume_profile.py /tmp/resume-profile    # writes resume.txt (py-spy's raw stacks)

Prints the seconds from the resume's launch to its first events. How the 2026-12-06 profile read: docs/benchmarks.md.
"""
import json, os, signal, subprocess, sys, time
from pathlib import Path
from tinyray.simcluster import SimulatedCluster

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
with SimulatedCluster(nodes=1, gpus_per_node=4, cpus_per_node=16) as cluster:
    env = cluster.env
    base = [sys.executable, "-m", "tinyray", "search", "--name", "r60", "--storage", str(out), "--address",
            cluster.address, "--json"]
    first = subprocess.Popen(base + ["--budget", "200M", "--trainer", "replay", "--replay-speed", "0.1", "--trials", "60",
                                     "--max-epochs", "2", "--grace-period", "1", "--reduction-factor", "3",
                                     "--pop-size", "16", "--generations-ahead", "2", "--gpus-per-trial", "0.25",
                                     "--cpus-per-trial", "1"],
                             stdout=subprocess.PIPE, stderr=open(out / "first.log", "w"), text=True, env=env)
    for line in first.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("done", 0) >= 30:
            first.send_signal(signal.SIGINT)
            break
    first.wait()
    print("first exit", first.returncode, flush=True)
    launched = time.time()
    second = subprocess.Popen(["py-spy", "record", "-r", "100", "--format", "raw", "-o", str(out / "resume.txt"),
                               "--", *base, "--resume"],
                              stdout=subprocess.PIPE, stderr=open(out / "second.log", "w"), text=True, env=env)
    firsts = {}
    for line in second.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            firsts.setdefault(event["event"], round(time.time() - launched, 2))
    second.wait()
    print("second exit", second.returncode, "first events (s after launch):", firsts, flush=True)
