"""The formula's answer at a search's budget, refitted on the fronts that ``tinyray bench overhead`` recorded.

Run: PYTHONPATH=TREE python benchmarks/formula_answers.py benchmarks/data/overhead_s15/overhead_s*.json

Each ``overhead.json`` keeps its search's summary (the front, 40 classes, budget 200M). The formula of TREE is fitted
on each front again and its answer printed: where it lies against the fitted range and the cube, and its note. A
change of the formula's answer policy is measured this way on the same fronts, not on new searches (whose fronts
differ from run to run).
"""

from __future__ import annotations

import json
import sys

import pandas as pd

from tinyray.formula import fit_formula
from tinyray.space import load_space


def main() -> None:
    space = load_space(None)
    for path in sys.argv[1:]:
        raw = json.loads(open(path).read())
        front = pd.DataFrame(raw["summary"]["front"])
        budget = int(raw["summary"].get("budget", 200_000_000))
        answer = fit_formula(front, space, 40, budget=budget).answer(budget)
        where = f"OUTSIDE: {answer.outside}" if answer.outside else "inside the cube and the fitted range"
        print(f"{path}: front of {len(front)}, highest {front['flops'].max() / 1e6:.1f}M; answer r={answer.r:.3f} "
              f"d={answer.d:.3f} w={answer.w:.3f} ({answer.flops / 1e6:.1f}M): {where}"
              + (f"; {answer.note}" if answer.note else ""))


if __name__ == "__main__":
    main()
