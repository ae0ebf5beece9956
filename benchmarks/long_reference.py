"""Is the proxy benchmark's reference long enough? Train one panel network for EPOCHS epochs of the reference's data.

    python benchmarks/long_reference.py tinynet_d 18 [OUT_DIR]

Same data (6000 training images, 1000 validation images), recipe and thread count as
``tinyray.fidelity.reference_protocol``; only the number of epochs differs (the cosine schedule spans all of them).
Top-1 is appended to ``OUT_DIR/long_NET_EPOCHSep.csv`` (default ``benchmarks/data``) after every epoch, so a run
stopped early keeps what it measured. ``benchmarks/data/long_tinynet_d_18ep.csv`` was recorded 2026-11-30 and
stopped after epoch 12 of 18 (see docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from tinyray import fidelity
from tinyray.data import load_data
from tinyray.space import load_space
from tinyray.train import train_candidate

COLUMNS = ["net", "r", "d", "w", "epoch", "epochs", "top1", "val_loss", "train_loss", "seconds"]


def main(name: str, epochs: int, out_dir: Path) -> Path:
    net = {net.name: net for net in fidelity.panel()}[name]
    protocol = fidelity.reference_protocol(fidelity.default_protocol())
    out = out_dir / f"long_{name}_{epochs}ep.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)

        def callback(epoch, checkpoint) -> None:  # noqa: ANN001 (train_candidate's callback)
            writer.writerow([name, net.r, net.d, net.w, epoch.epoch, epochs, epoch.top1, epoch.val_loss,
                             epoch.train_loss, round(time.time() - start)])
            handle.flush()

        train_candidate(load_space(), net.r, net.d, net.w, load_data(protocol.data), epochs=epochs,
                        recipe=protocol.recipe, seed=0, threads=protocol.threads, callback=callback)
    return out


if __name__ == "__main__":
    print(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3] if len(sys.argv) > 3 else "benchmarks/data")))
