"""Search-space files: the shipped space loads, and every mistake is one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tinyray.errors import UserError
from tinyray.space import SPACES_DIR, available_spaces, load_space, resolve_space_path


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _base() -> dict:
    return yaml.safe_load((SPACES_DIR / "efficientnet_b0.yaml").read_text())


def test_shipped_space_loads_with_bounds_and_blocks(space):
    assert space.name == "efficientnet_b0"
    assert space.base_resolution == 224
    assert space.family == "efficientnet" and space.reference == "efficientnet_b0"
    assert len(space.network.blocks) == 7 and space.network.blocks[1] == ("ir_r2_k3_s2_e6_c24_se0.25",)
    assert (space.r.low, space.r.high) == (0.25, 1.0)
    assert space.d.high >= 1.2  # TinyNet-A's depth lies inside


@pytest.mark.parametrize(
    "r, side", [(0.86, 192), (0.84, 188), (0.825, 184), (0.68, 152), (0.475, 106), (0.875, 196), (1.0, 224)]
)
def test_resolution_floors_like_timm_tinynets(space, r, side):
    assert space.resolution(r) == side


def test_name_and_path_resolve_to_the_same_file(tmp_path):
    by_name = resolve_space_path("efficientnet_b0")
    path = _write(tmp_path, (SPACES_DIR / "efficientnet_b0.yaml").read_text())
    assert by_name == SPACES_DIR / "efficientnet_b0.yaml"
    assert load_space(str(path)).network == load_space("efficientnet_b0").network


def test_shipped_spaces_are_package_data_inside_tinyray():
    import tinyray

    assert SPACES_DIR.parent == Path(tinyray.__file__).resolve().parent
    assert "efficientnet_b0" in available_spaces()


def test_a_users_search_spaces_folder_is_found_by_name_first(tmp_path, monkeypatch):
    raw = _base()
    raw["name"] = "mine"
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "efficientnet_b0.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert load_space("efficientnet_b0").name == "mine"


def _mutate(change):
    raw = _base()
    change(raw)
    return yaml.safe_dump(raw)


BAD_SPACES = [
    ("unknown key", lambda raw: raw.update(colour="red"), "unknown key 'colour'"),
    ("missing field", lambda raw: raw.pop("blocks"), "missing key 'blocks'"),
    ("wrong type", lambda raw: raw.update(base_resolution="big"), "base_resolution must be an integer"),
    ("bool is not int", lambda raw: raw.update(stem_channels=True), "stem_channels must be an integer"),
    ("reversed bounds", lambda raw: raw["bounds"].update(r=[1.0, 0.25]), "bounds.r is reversed"),
    ("missing bound", lambda raw: raw["bounds"].pop("w"), "missing key bounds.w"),
    ("unknown bound", lambda raw: raw["bounds"].update(x=[1, 2]), "unknown key bounds.x"),
    ("bad bound shape", lambda raw: raw["bounds"].update(d=[0.5]), "bounds.d must be [low, high]"),
    ("negative bound", lambda raw: raw["bounds"].update(w=[-1, 1]), "bounds.w must be positive"),
    ("bad block", lambda raw: raw["blocks"].append(["xx_r1_k3"]), "not a supported timm block string"),
    ("empty blocks", lambda raw: raw.update(blocks=[]), "blocks is empty"),
    ("bad activation", lambda raw: raw.update(activation="tanhh"), "activation 'tanhh'"),
]


@pytest.mark.parametrize("case, change, message", BAD_SPACES, ids=[c[0] for c in BAD_SPACES])
def test_bad_space_is_one_line_naming_file_and_key(tmp_path, case, change, message):
    path = _write(tmp_path, _mutate(change))
    with pytest.raises(UserError) as info:
        load_space(path)
    text = str(info.value)
    assert message in text
    assert str(path) in text
    assert "\n" not in text


def test_malformed_yaml_names_the_line(tmp_path):
    path = _write(tmp_path, "name: x\nblocks: [\n  - oops: [\n")
    with pytest.raises(UserError, match=r"not valid YAML at line \d+"):
        load_space(path)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="unknown search space 'nope'.*efficientnet_b0"):
        load_space("nope")


def test_not_a_mapping(tmp_path):
    with pytest.raises(UserError, match="must be a YAML mapping"):
        load_space(_write(tmp_path, "- 1\n- 2\n"))


def test_check_point_rejects_points_outside_the_cube(space):
    space.check_point(0.5, 0.5, 0.5)
    with pytest.raises(UserError, match=r"--r 2 is outside"):
        space.check_point(2.0, 0.5, 0.5)
    with pytest.raises(UserError, match="not a positive number"):
        space.check_point(0.5, float("nan"), 0.5)
