"""Print benchmarks/driver_accounting/sitecustomize.py's output: ms of CPU a finished trial, per window.

    python benchmarks/driver_accounting/show.py ACCT.jsonl [WINDOW]   (default 50 trials; the first driver's line)
"""
import json, sys
W = int(sys.argv[2]) if len(sys.argv) > 2 else 50
for path in sys.argv[1:2] + sys.argv[3:]:
    rows = json.loads(open(path).readline())["rows"]
    keys = sorted({k for r in rows for k in r} - {"done"})
    sel = [r for r in rows if r["done"] % W == 0 and r["done"] > 0]
    sel = [r for i, r in enumerate(sel) if i == 0 or r["done"] != sel[i-1]["done"]]
    print(path)
    print(f"{'':14}" + " ".join(f"{a['done']:>4}-{b['done']:<4}" for a, b in zip(sel, sel[1:])))
    for k in keys:
        print(f"{k:14}" + " ".join(f"{(b.get(k,0)-a.get(k,0))/(b['done']-a['done'])*1e3:9.1f}" for a, b in zip(sel, sel[1:])))
