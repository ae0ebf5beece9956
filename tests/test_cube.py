"""The model builder reproduces timm's TinyNet-A..E from their (r, d, w)."""

from __future__ import annotations

import pytest
import timm
import torch

from tinyray.cube import TINYNETS, Candidate, build_model, stage_depths


@pytest.mark.parametrize("name", sorted(TINYNETS))
def test_builder_matches_timm_tinynets(space, name):
    spec = TINYNETS[name]
    ours = build_model(space, spec["r"], spec["d"], spec["w"], num_classes=1000)
    theirs = timm.create_model(name, pretrained=False)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    # same layer shapes in the same order, not just the same total
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    assert ours.pretrained_cfg["input_size"] == theirs.pretrained_cfg["input_size"]


def test_cached_decoding_is_timm_s_at_every_depth():
    """The decoding is cached on each stage's scaled block count (tinyray.families.efficientnet._decode): it must
    be timm's decoding at the depth itself, for every shipped timm-block space, at depths on and off the
    rounding edges, including a stage of two block strings that timm allots more blocks than its total."""
    import numpy as np

    from tinyray.cube import timm_builder
    from tinyray.families.efficientnet import EfficientNetNetwork, _decode
    from tinyray.space import available_spaces, load_space

    networks = [load_space(name).network for name in available_spaces()]
    networks = [network.blocks for network in networks if isinstance(network, EfficientNetNetwork)]
    networks.append((("ds_r1_k3_s1_e1_c16",), ("ir_r1_k3_s2_e6_c24", "ir_r1_k5_s1_e6_c24"), ("ir_r3_k3_s2_e6_c40",)))
    assert len(networks) >= 3
    depths = np.concatenate([np.random.default_rng(0).uniform(0.05, 2.5, 400), np.arange(0.05, 2.5, 1 / 24),
                             [0.25, 0.5, 1 / 3, 2 / 3, 1.0, 1.5, 1.2, 1.25]])
    for blocks in networks:
        for d in depths:
            theirs = timm_builder().decode_arch_def([list(stage) for stage in blocks], float(d), depth_trunc="round")
            assert repr(_decode(blocks, float(d))) == repr(tuple(tuple(stage) for stage in theirs)), (blocks, d)


def test_depth_rounds_per_stage_with_at_least_one_block(space):
    assert stage_depths(space, 1.0) == (1, 2, 2, 3, 3, 4, 1)
    assert stage_depths(space, 0.25) == (1, 1, 1, 1, 1, 1, 1)
    assert stage_depths(space, 1.2) == (1, 2, 2, 4, 4, 5, 1)


def test_built_model_runs_at_its_resolution_and_options_apply(space):
    model = build_model(space, 0.3, 0.4, 0.4, num_classes=7, drop_rate=0.2, bn_momentum=0.01).eval()
    side = model.pretrained_cfg["input_size"][-1]
    assert side == 67
    assert model(torch.zeros(2, 3, side, side)).shape == (2, 7)
    assert model.drop_rate == 0.2
    assert model.bn1.momentum == 0.01
    assert model.conv_stem.out_channels == 32  # the stem is fixed under width scaling
    assert model.num_features == 1280  # the head never shrinks below the base


def test_candidate_label():
    assert Candidate(0.84, 1.1, 0.75).label == "r0.84-d1.10-w0.75"


def test_timm_private_builder_api():
    """tinyray reaches into timm's private ``_efficientnet_builder`` (tinyray.cube.timm_builder): fail loudly if timm
    moves or changes the two functions it uses."""
    import inspect

    from tinyray.cube import timm_builder

    builder = timm_builder()
    assert builder.__name__ == "timm.models._efficientnet_builder"
    assert list(inspect.signature(builder.round_channels).parameters)[:3] == ["channels", "multiplier", "divisor"]
    assert "depth_trunc" in inspect.signature(builder.decode_arch_def).parameters
    assert builder.round_channels(32, 0.5, 8) == 16 and builder.round_channels(40, 0.75, 8) == 32
    stages = builder.decode_arch_def([["ds_r1_k3_s1_e1_c16_se0.25"], ["ir_r2_k3_s2_e6_c24_se0.25"]], 0.5,
                                     depth_trunc="round")
    assert [len(stage) for stage in stages] == [1, 1] and stages[1][0]["out_chs"] == 24
