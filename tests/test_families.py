"""Network families: every shipped base is timm's reference network at (1, 1, 1), its analytic count equals torch's
across its cube, one network key means one network, and the search, formula and export work on every base."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml

from tinyray.cost import analytic_cost, base_flops, measured_cost
from tinyray.cube import build_model
from tinyray.errors import UserError
from tinyray.files import read_results_csv
from tinyray.families import FAMILIES, network_class
from tinyray.families.base import Network
from tinyray.space import SPACES_DIR, available_spaces, load_space, parse_space

#: The bases added beside EfficientNet-B0 (tests/test_cost.py and tests/test_cube.py cover B0 the same way).
BASES = ["resnet50", "ghostnet", "mobilenetv3_large"]
ALL_BASES = ["efficientnet_b0", *BASES]


def _cube_points(space, count: int, seed: int) -> list[tuple[float, float, float]]:
    """The 8 corners of the (r, d, w) cube, then ``count`` uniform points inside it."""
    bounds = (space.r, space.d, space.w)
    rng = random.Random(seed)
    points = list(itertools.product(*[(b.low, b.high) for b in bounds]))
    return points + [tuple(rng.uniform(b.low, b.high) for b in bounds) for _ in range(count)]


def test_registry_and_shipped_spaces_agree():
    assert set(available_spaces()) >= set(ALL_BASES)
    for name, entry in FAMILIES.items():
        cls = network_class(name)
        assert issubclass(cls, Network) and cls.family == name and entry.help
    assert {load_space(name).family for name in ALL_BASES} == set(FAMILIES)


@pytest.mark.parametrize("name", ALL_BASES)
def test_base_is_timms_reference_network(name):
    space = load_space(name)
    ours = build_model(space, 1.0, 1.0, 1.0, num_classes=1000)
    theirs = timm.create_model(space.reference, pretrained=False)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    # module for module: the same names, shapes and layers (activations, gates, BatchNorm settings) in order
    assert [(key, tuple(value.shape)) for key, value in ours.state_dict().items()] == \
           [(key, tuple(value.shape)) for key, value in theirs.state_dict().items()]
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in theirs.modules()]
    analytic, measured = analytic_cost(space, 1.0, 1.0, 1.0), measured_cost(space, 1.0, 1.0, 1.0)
    assert analytic.params == measured.params == sum(p.numel() for p in theirs.parameters())
    assert math.isclose(analytic.flops, measured.flops, rel_tol=0.005)  # the bound; in fact equal
    assert analytic.flops == measured.flops == base_flops(space)


@pytest.mark.slow  # builds and runs 28 networks a base: 30-60 s of CPU each
@pytest.mark.parametrize("name", BASES)
def test_analytic_equals_measured_across_the_cube(name):
    space = load_space(name)
    for r, d, w in _cube_points(space, 20, seed=17):
        analytic = analytic_cost(space, r, d, w, 20)
        measured = measured_cost(space, r, d, w, 20)
        assert analytic.resolution == measured.resolution
        assert math.isclose(analytic.flops, measured.flops, rel_tol=0.005), (r, d, w)
        assert (analytic.flops, analytic.params) == (measured.flops, measured.params), (r, d, w)


def test_readme_resnet18_of_basic_blocks(tmp_path):
    """The README's example of a new base of a known family: ResNet-18 is timm's resnet18, counted exactly."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme[readme.index("  name: resnet18"):]
    path = tmp_path / "resnet18.yaml"
    path.write_text("\n".join(line[2:] for line in example[:example.index("  ```")].splitlines()))
    space = load_space(path)
    ours = build_model(space, 1.0, 1.0, 1.0)
    theirs = timm.create_model(space.reference, pretrained=False)
    assert [tuple(v.shape) for v in ours.state_dict().values()] == [tuple(v.shape) for v in theirs.state_dict().values()]
    for point in [(1.0, 1.0, 1.0), (0.3, 0.5, 0.3), (0.7, 1.4, 0.6)]:
        analytic, measured = analytic_cost(space, *point), measured_cost(space, *point)
        assert (analytic.flops, analytic.params) == (measured.flops, measured.params), point


@pytest.mark.parametrize("name", BASES)
def test_cost_grows_with_each_multiplier(name):
    space = load_space(name)
    low = analytic_cost(space, 0.5, 0.5, 0.5).flops
    assert analytic_cost(space, 0.7, 0.5, 0.5).flops > low
    assert analytic_cost(space, 0.5, 0.9, 0.5).flops > low
    assert analytic_cost(space, 0.5, 0.5, 0.9).flops > low


@pytest.mark.parametrize("name, depths", [
    ("resnet50", {1.0: (3, 4, 6, 3), 0.5: (2, 2, 3, 2), 0.25: (1, 1, 2, 1), 1.25: (4, 5, 8, 4)}),
    ("ghostnet", {1.0: (1, 2, 2, 4, 2, 5), 0.5: (1, 1, 1, 2, 1, 2), 0.25: (1, 1, 1, 1, 1, 1), 1.25: (1, 2, 2, 5, 2, 6)}),
    # timm's depth_trunc='round' keeps one block of each block string: stage 3 has three
    ("mobilenetv3_large", {1.0: (1, 2, 3, 4, 2, 3, 1), 0.5: (1, 2, 2, 3, 1, 2, 1), 0.25: (1, 2, 1, 3, 1, 1, 1)}),
])
def test_depth_scales_the_blocks_of_each_stage(name, depths):
    space = load_space(name)
    for d, expected in depths.items():
        assert space.network.stage_depths(d) == expected
    built = build_model(space, 0.5, 0.5, 0.5)
    blocks = {"resnet50": lambda m: tuple(len(getattr(m, f"layer{i}")) for i in range(1, 5)),
              "ghostnet": lambda m: sum(len(stage) for stage in m.blocks[:-1]),
              "mobilenetv3_large": lambda m: tuple(len(stage) for stage in m.blocks)}[name](built)
    expected = depths[0.5]
    assert blocks == (sum(expected) if name == "ghostnet" else expected)


def test_width_scales_channels_as_timm_does():
    resnet = build_model(load_space("resnet50"), 1.0, 1.0, 0.5)
    assert resnet.conv1.out_channels == 64  # timm's ResNet stem is fixed
    assert [resnet.layer1[0].conv1.out_channels, resnet.layer4[0].conv3.out_channels] == [32, 1024]
    ghost = build_model(load_space("ghostnet"), 1.0, 1.0, 0.5)
    assert ghost.conv_stem.out_channels == 8 and ghost.conv_head.out_channels == 1280  # timm's width multiplier
    mobile = build_model(load_space("mobilenetv3_large"), 1.0, 1.0, 0.5)
    assert mobile.conv_stem.out_channels == 16 and mobile.conv_head.out_channels == 1280
    assert mobile.blocks[-1][0].conv.out_channels == 480  # cn_r1_k1_s1_c960 at w = 0.5


@pytest.mark.parametrize("name", BASES)
def test_points_with_one_network_key_cost_the_same(name):
    from tinyray.searchers.band import FlopsBand

    space = load_space(name)
    band = FlopsBand(space, base_flops(space, 20), num_classes=20)
    rng = np.random.default_rng(0)
    costs: dict[tuple, set] = {}
    for _ in range(400):
        # few distinct values of each multiplier, so that many draws build the same network
        x = (rng.choice([0.5, 0.6]), rng.uniform(0.25, 1.25), rng.uniform(0.25, 1.0))
        cost = analytic_cost(space, *x, 20)
        costs.setdefault(band.network_key(x), set()).add((cost.flops, cost.params))
    assert all(len(seen) == 1 for seen in costs.values())
    assert 20 < len(costs) < 400  # distinct networks, and points that share one


@pytest.mark.parametrize("name", ALL_BASES)
def test_built_model_runs_with_the_recipe_options(name):
    from tinyray.train import get_recipe, make_model

    space = load_space(name)
    model = build_model(space, 0.3, 0.4, 0.4, num_classes=7, drop_rate=0.2, bn_momentum=0.01).eval()
    side = model.pretrained_cfg["input_size"][-1]
    assert side == 67 and model.pretrained_cfg["tinyray"]["family"] == space.family
    assert model(torch.zeros(2, 3, side, side)).shape == (2, 7)
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 7)  # the built-in data's smallest proxy input
    modules = dict(model.named_modules())
    assert model.pretrained_cfg["first_conv"] in modules and modules[model.pretrained_cfg["classifier"]] is model.get_classifier()
    assert model.drop_rate == 0.2
    assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.01}

    trained = make_model(space, 0.3, 0.4, 0.4, 7, get_recipe("proxy"))  # zero_init_last, as a search trains
    norms = space.network.residual_norms(trained)
    assert norms and all(isinstance(n, torch.nn.BatchNorm2d) and not n.weight.any() for n in norms)
    assert not trained.get_classifier().weight.any()


def test_residual_norms_are_the_last_of_each_block():
    resnet = build_model(load_space("resnet50"), 0.5, 0.5, 0.5)
    assert len(load_space("resnet50").network.residual_norms(resnet)) == sum((2, 2, 3, 2))
    ghostnet_space = load_space("ghostnet")
    ghost = build_model(ghostnet_space, 0.5, 0.5, 0.5)
    assert len(ghostnet_space.network.residual_norms(ghost)) == 2 * sum(ghostnet_space.network.stage_depths(0.5))


@pytest.mark.parametrize("name", ALL_BASES)
def test_space_round_trips_through_its_dict(name):
    """formula.json and an export's config.json carry the space as a dict: it must read back as the same space."""
    space = load_space(name)
    again = parse_space(space.to_dict(), where="state")
    assert again.network == space.network and again.bounds() == space.bounds() and again.family == space.family
    assert analytic_cost(again, 0.5, 0.5, 0.5) == analytic_cost(space, 0.5, 0.5, 0.5)


def test_a_space_without_family_is_efficientnet():
    raw = yaml.safe_load((SPACES_DIR / "efficientnet_b0.yaml").read_text())
    raw.pop("family")
    assert parse_space(raw).network == load_space("efficientnet_b0").network


def _write(tmp_path: Path, name: str, change) -> Path:
    raw = yaml.safe_load((SPACES_DIR / f"{name}.yaml").read_text())
    change(raw)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


BAD_SPACES = [
    ("resnet50", lambda raw: raw.update(family="vgg"), "unknown family 'vgg'"),
    ("resnet50", lambda raw: raw.update(family=3), "family must be a string"),
    ("resnet50", lambda raw: raw.update(blocks=["ir_r1_k3_s1_e1_c16"]), "unknown key 'blocks' for family 'resnet'"),
    ("resnet50", lambda raw: raw.pop("layers"), "missing key 'layers'"),
    ("resnet50", lambda raw: raw.update(layers=[3, 4, 6]), "layers has 3 stages and channels 4"),
    ("resnet50", lambda raw: raw.update(layers=[3, 0, 6, 3]), "layers must be a list of 1 to"),
    ("resnet50", lambda raw: raw.update(channels="wide"), "channels must be a list"),
    ("resnet50", lambda raw: raw.update(block="dense"), "block 'dense' is not one of"),
    ("ghostnet", lambda raw: raw.update(stages=[]), "stages must list 1 to"),
    ("ghostnet", lambda raw: raw["stages"][1].append([3, 72, 24, 0]), "is not a block [kernel"),
    ("ghostnet", lambda raw: raw["stages"][0][0].__setitem__(0, 4), "kernel 4 of [4, 16, 16, 0, 1] must be odd"),
    ("ghostnet", lambda raw: raw["stages"][2][0].__setitem__(3, 2.0), "SE ratio 2.0"),
    ("ghostnet", lambda raw: raw["stages"][2][0].__setitem__(1, 7.5), "expansion 7.5"),
    ("mobilenetv3_large", lambda raw: raw["blocks"].append(["cn_r1_s1_c960"]), "lacks _k"),
    ("mobilenetv3_large", lambda raw: raw["blocks"].append(["er_r1_k3_s1_e4_c24"]), "not a supported timm block string"),
    ("mobilenetv3_large", lambda raw: raw.update(reference="a\nb"), "reference must be one line"),
]


@pytest.mark.parametrize("name, change, message", BAD_SPACES, ids=[f"{c[0]}-{c[2][:24]}" for c in BAD_SPACES])
def test_bad_family_space_is_one_line_naming_file_and_key(tmp_path, name, change, message):
    path = _write(tmp_path, name, change)
    with pytest.raises(UserError) as info:
        load_space(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_bad_space_exits_2_with_one_line(tmp_path, capsys):
    from tinyray.cli import main

    path = _write(tmp_path, "ghostnet", lambda raw: raw.update(stages="many"))
    assert main(["flops", "--space", str(path), "--r", "1", "--d", "1", "--w", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "stages must be a list" in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("name, budget", [("resnet50", 1e9), ("ghostnet", 60e6), ("mobilenetv3_large", 100e6)])
def test_searcher_and_formula_are_relative_to_each_base(tmp_path, name, budget):
    """c = FLOPs / FLOPs(base at 1, 1, 1) for every base: the searcher's candidates, a formula fitted on a front
    drawn from the paper's curves, its answer and its saved state know nothing of the family."""
    from tinyray.formula import fit_formula, paper_width, plot_formula
    from tinyray.searchers import make_searcher

    space = load_space(name)
    core = make_searcher("nsga3", space, int(budget), seed=0, pop_size=6, num_classes=20)
    assert core.base_flops == base_flops(space, 20)
    handed = [core.ask(f"t{i}") for i in range(6)]
    assert all(analytic_cost(space, c.r, c.d, c.w, 20).flops <= budget for c in handed)
    assert len({core.band.network_key((c.r, c.d, c.w)) for c in handed}) == 6

    c = np.geomspace(0.04, 0.8, 8)
    r, d = 0.42 + 0.18 * np.log10(c / 0.04), 0.45 + 0.45 * np.sqrt(c)
    front = pd.DataFrame({"c": c, "r": r, "d": d, "w": paper_width(c, r, d), "top1": np.linspace(0.4, 0.8, 8)})
    formula = fit_formula(front, space, 20, seed=0, source="synthetic")
    answer = formula.answer(0.3 * base_flops(space, 20))
    assert answer.flops <= answer.budget and not answer.extrapolates
    assert analytic_cost(space, answer.r, answer.d, answer.w, 20).flops == answer.flops
    assert formula.space.network.landmarks() == {}  # TinyNet-A..E are points of B0's cube only
    assert plot_formula(formula, tmp_path / "formula.png").read_bytes()[:4] == b"\x89PNG"


def test_tinynets_are_landmarks_of_b0_alone():
    from tinyray.cube import TINYNETS

    b0 = load_space("efficientnet_b0").network
    assert b0.landmarks() == {name: (net["r"], net["d"], net["w"]) for name, net in TINYNETS.items()}
    assert type(b0)(b0.blocks[:-1], b0.stem_channels, b0.head_channels).landmarks() == {}


@pytest.mark.parametrize("name", BASES)
def test_export_rebuilds_the_network(tmp_path, name):
    from tinyray.export import export_network, load_exported

    space = load_space(name)
    torch.manual_seed(0)
    folder = export_network(space, 0.4, 0.6, 0.5, tmp_path / "net", num_classes=5)
    model, config = load_exported(folder)
    assert config["space"]["family"] == space.family
    original = build_model(space, 0.4, 0.6, 0.5, 5)
    assert [tuple(p.shape) for p in model.parameters()] == [tuple(p.shape) for p in original.parameters()]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("name, budget", [("resnet50", 60_000_000), ("ghostnet", 20_000_000),
                                          ("mobilenetv3_large", 20_000_000)])
def test_search_end_to_end(tmp_path, name, budget):
    """A CI-sized search per base with real Ray, training and MLflow: trials, front, MLflow runs, report."""
    from mlflow import MlflowClient

    from tinyray.data import DataSpec
    from tinyray.search import SearchConfig, run_search

    data = DataSpec(train_size=80, val_size=40, cache_dir=tmp_path / "cache")
    config = SearchConfig(budget=budget, name=f"e2e-{name}", space=name, storage=tmp_path / "results", data=data,
                          trials=3, max_epochs=1, grace_period=1, pop_size=4, seed=1, progress="quiet")
    result = run_search(config)
    space = load_space(name)
    trials = read_results_csv(result.results_dir / "trials.csv")
    assert len(trials) == 3 and (trials["status"] == "completed").all()
    for row in trials.itertuples():
        assert row.flops == analytic_cost(space, row.r, row.d, row.w, data.num_classes).flops <= budget
    assert not result.front.empty and (result.results_dir / "report.html").is_file()
    assert result.formula is not None or "needs" in result.formula_note
    client = MlflowClient(tracking_uri=result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["setting.space"] == name and parent.info.status == "FINISHED"
    assert int(parent.data.tags["setting.base_flops"]) == base_flops(space, data.num_classes)
