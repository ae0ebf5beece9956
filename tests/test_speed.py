"""Tests of tinyray.speed (``tinyray bench train``): both loops run and the report is complete. No timing is
asserted (speed is measured by running the command, not by tests)."""

from __future__ import annotations

import json
import math

from tinyray.cli import main
from tinyray.space import load_space
from tinyray.speed import bench_train


def test_both_loops_run_and_report_images_per_second():
    speed = bench_train(load_space(), 0.25, 0.25, 0.25, num_classes=5, recipe="paper", batch_size=4, steps=1, warmup=1,
                        repeats=3)
    assert speed.resolution == 56 and speed.batch_size == 4 and speed.precision == "fp32" and speed.recipe == "paper"
    assert speed.tinyray > 0 and speed.plain > 0 and speed.repeats == 3
    assert speed.ratio_low <= speed.ratio <= speed.ratio_high  # the median of the three rounds' ratios


def test_one_round_s_ratio_is_its_two_speeds():
    speed = bench_train(load_space(), 0.25, 0.25, 0.25, num_classes=5, recipe="proxy", batch_size=4, steps=1, warmup=1)
    assert speed.repeats == 1 and math.isclose(speed.ratio, speed.tinyray / speed.plain)
    assert speed.ratio_low == speed.ratio == speed.ratio_high


def test_bench_train_command_prints_one_json_object(capsys):
    code = main(["bench", "train", "--r", "0.25", "--d", "0.25", "--w", "0.25", "--batch-size", "4", "--steps", "1",
                 "--repeats", "2", "--precision", "bf16", "--no-channels-last", "--num-classes", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["precision"] == "bf16" and out["channels_last"] is False and out["device"] == "cpu"
    assert out["repeats"] == 2
    assert set(out) == {"tinyray", "plain", "ratio", "ratio_low", "ratio_high", "repeats", "resolution", "batch_size", "steps", "device", "precision",
                        "channels_last", "recipe", "loading"} and out["loading"] == []  # no --data, no loader timing


def test_loader_timing_from_files_and_from_the_decoded_cache(tmp_path, monkeypatch):
    from conftest import mixed_folder

    from tinyray.speed import bench_loading

    monkeypatch.setenv("TINYRAY_CACHE", str(tmp_path / "cache"))
    root, _ = mixed_folder(tmp_path / "mixed")
    lines = bench_loading(root, resolution=16, batch_size=2, workers=(0, 1), batches=2, repeats=2)
    assert [(line.source, line.workers) for line in lines] == [("files", 0), ("files", 1), ("decoded", 0), ("decoded", 1)]
    assert all(line.images >= 3 and 0 < line.low <= line.images_per_second <= line.high for line in lines)  # a batch may hold the corrupt one
    assert (tmp_path / "cache" / "data" / "decoded").is_dir()
