"""Write an ImageFolder of JPEG files drawn by the built-in generator, for `tinyray bench train --data`.

No dataset can be downloaded here, so the loader benchmark (issue 18) reads a folder this script writes: the
built-in images drawn at ``--side`` pixels (ImageNet's typical decode size is about 400x350; 256 is the default
here), saved as JPEG quality 90 into ``OUT/train/<class>/`` and ``OUT/val/<class>/``. Decoding cost depends on
the files' size and format, not on what they show, so this measures the loader as ImageNet files would (within
the difference in side).

    python benchmarks/jpeg_folder.py ~/jpeg256 --classes 10 --train 100 --val 20 --side 256
    tinyray bench train --r 1 --d 1 --w 1 --threads 1 --batch-size 16 --recipe proxy --data ~/jpeg256 --workers 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tinyray.data import generate_synthetic, synthetic_classes


def write_split(root: Path, count: int, num_classes: int, side: int, seed: int) -> int:
    images, labels = generate_synthetic(count, num_classes=num_classes, side=side, seed=seed)
    names = synthetic_classes(num_classes)
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(folder / f"{index:06d}.jpg", quality=90)
    return len(labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a new folder")
    parser.add_argument("--classes", type=int, default=10, help="classes, 2..40 (default 10)")
    parser.add_argument("--train", type=int, default=100, help="training images a class (default 100)")
    parser.add_argument("--val", type=int, default=20, help="validation images a class (default 20)")
    parser.add_argument("--side", type=int, default=256, help="image side in pixels (default 256)")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"{args.out} exists and is not empty: give a new folder", file=sys.stderr)
        return 2
    train = write_split(args.out / "train", args.train * args.classes, args.classes, args.side, seed=0)
    val = write_split(args.out / "val", args.val * args.classes, args.classes, args.side, seed=1)
    print(f"wrote {train} training and {val} validation JPEG files of {args.side} px to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
