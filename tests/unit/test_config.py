"""``raylurm.config``: ``key=value`` overrides, ``from_dict`` and ``to_dict`` on the real config classes.

Only the public functions are exercised (their implementation may change; the behaviour must not):
every field type the configs use — bool, int, float, str, tuples, ``X | None`` — and the errors.
"""

from __future__ import annotations

import json

import pytest

from raylurm.boi.pipeline import BoiConfig
from raylurm.config import apply_overrides, from_dict, to_dict
from raylurm.evaluate.tasks import EvalConfig
from raylurm.methods.adaptssr import AdaptSSRConfig
from raylurm.methods.lurm import LURMConfig
from raylurm.train.config import TrainConfig


@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("TRUE", True), ("1", True),
                                         ("false", False), ("False", False), ("0", False)])
def test_bool_fields(text, value):
    flipped = apply_overrides(TrainConfig(use_gpu=not value), [f"use_gpu={text}"])
    assert flipped.use_gpu is value
    assert apply_overrides(BoiConfig(sequences=not value), [f"sequences={text}"]).sequences is value


@pytest.mark.parametrize("text", ["yes", "no", "2", "", "truthy"])
def test_a_bool_field_rejects_anything_else_and_names_the_key(text):
    with pytest.raises(ValueError, match="use_gpu"):
        apply_overrides(TrainConfig(), [f"use_gpu={text}"])


def test_int_float_and_str_fields_are_typed():
    config = apply_overrides(LURMConfig(), ["num_anchors=4", "temperature=0.05", "scales=month", "lr=1"])
    assert config == LURMConfig(num_anchors=4, temperature=0.05, scales="month", lr=1.0)
    assert type(config.num_anchors) is int and type(config.temperature) is float and type(config.lr) is float
    train = apply_overrides(TrainConfig(), ["method=dss", "epochs=7", "seed=-3"])
    assert (train.method, train.epochs, train.seed) == ("dss", 7, -3)


def test_dashes_and_spaces_around_keys_and_values_are_accepted():
    config = apply_overrides(LURMConfig(), ["num-anchors=5", " hidden_dim = 16 "])
    assert (config.num_anchors, config.hidden_dim) == (5, 16)


@pytest.mark.parametrize("override", ["num_anchors=four", "num_anchors=2.5", "temperature=warm", "epochs="])
def test_an_unparsable_number_is_an_error_naming_the_key(override):
    key = override.split("=")[0]
    config = TrainConfig() if key == "epochs" else LURMConfig()
    with pytest.raises(ValueError, match=key):
        apply_overrides(config, [override])


def test_values_are_validated_by_the_config():
    with pytest.raises(ValueError, match="temperature"):
        apply_overrides(LURMConfig(), ["temperature=0"])
    with pytest.raises(ValueError, match="scales"):
        apply_overrides(LURMConfig(), ["scales=weekly"])


@pytest.mark.parametrize("text", ["month,year", "month, year", '["month", "year"]', '["month","year"]'])
def test_tuple_of_str_from_commas_and_from_json(text):
    config = apply_overrides(BoiConfig(scales=("year",)), [f"scales={text}"])
    assert config.scales == ("month", "year") and isinstance(config.scales, tuple)


def test_tuples_of_numbers_are_typed_per_item():
    config = apply_overrides(EvalConfig(), ["seeds=3,4", "fractions=[0.5, 0.25, 0.25]"])
    assert config.seeds == (3, 4) and all(type(s) is int for s in config.seeds)
    assert config.fractions == (0.5, 0.25, 0.25) and all(type(f) is float for f in config.fractions)
    assert apply_overrides(EvalConfig(), ["seeds=[7]"]).seeds == (7,)
    assert apply_overrides(EvalConfig(), ["seeds=7"]).seeds == (7,)
    assert apply_overrides(AdaptSSRConfig(), ["augmentations=crop,mask"]).augmentations == ("crop", "mask")
    with pytest.raises(ValueError, match="seeds"):
        apply_overrides(EvalConfig(), ["seeds=1,x"])


@pytest.mark.parametrize("text", ["none", "None", "null", "NULL"])
def test_optional_fields_take_none(text):
    config = apply_overrides(TrainConfig(batch_size=64, lr=0.1, max_steps_per_epoch=3), [
        f"batch_size={text}", f"lr={text}", f"max_steps_per_epoch={text}"])
    assert (config.batch_size, config.lr, config.max_steps_per_epoch) == (None, None, None)


def test_optional_fields_take_a_typed_value():
    config = apply_overrides(TrainConfig(), ["batch_size=64", "lr=3e-4", "fault_step=0"])
    assert (config.batch_size, config.lr, config.fault_step) == (64, 3e-4, 0)
    assert type(config.batch_size) is int and type(config.lr) is float and type(config.fault_step) is int
    with pytest.raises(ValueError, match="batch_size"):
        apply_overrides(TrainConfig(), ["batch_size=many"])


def test_an_unknown_key_is_an_error_naming_it():
    with pytest.raises(ValueError, match="num_anchorz"):
        apply_overrides(LURMConfig(), ["num_anchors=3", "num_anchorz=4"])


def test_a_missing_equals_sign_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="epochs"):
        apply_overrides(TrainConfig(), ["epochs"])
    with pytest.raises(ValueError, match="epochs"):
        apply_overrides(TrainConfig(), ["epochs:3"])


def test_the_result_is_a_new_config_and_the_original_is_unchanged():
    original = LURMConfig(num_anchors=3)
    snapshot = to_dict(original)
    changed = apply_overrides(original, ["num_anchors=6", "scales=year"])
    assert changed is not original and (changed.num_anchors, changed.scales) == (6, "year")
    assert to_dict(original) == snapshot and original == LURMConfig(num_anchors=3)
    assert type(changed) is LURMConfig
    assert apply_overrides(original, []) == original
    with pytest.raises(ValueError):
        apply_overrides(original, ["num_anchors=6", "hidden_dim=x"])  # a failing override changes nothing either
    assert original == LURMConfig(num_anchors=3)


def test_later_overrides_of_the_same_key_win():
    assert apply_overrides(TrainConfig(), ["epochs=2", "epochs=9"]).epochs == 9


def test_from_dict_builds_the_config_and_rejects_unknown_keys_by_name():
    assert from_dict(LURMConfig, {"num_anchors": 2, "temperature": 0.5}) == LURMConfig(num_anchors=2, temperature=0.5)
    assert from_dict(TrainConfig, {}) == TrainConfig()
    with pytest.raises(ValueError, match="hiden_dim") as err:
        from_dict(LURMConfig, {"num_anchors": 2, "hiden_dim": 4, "tempreature": 1.0})
    assert "tempreature" in str(err.value)


@pytest.mark.parametrize("config", [LURMConfig(num_anchors=2, scales="year", temperature=0.3),
                                    TrainConfig(method="atrank", batch_size=32, lr=None, use_gpu=True, fault_step=4)],
                         ids=["lurm", "train"])
def test_to_dict_round_trips_through_json_and_from_dict(config):
    values = to_dict(config)
    assert values == json.loads(json.dumps(values))  # plain JSON types only
    assert set(values) == set(to_dict(type(config)()))  # every field, none extra
    assert from_dict(type(config), values) == config
    assert from_dict(type(config), json.loads(json.dumps(values))) == config


def test_to_dict_writes_tuples_as_json_lists():
    values = to_dict(BoiConfig(scales=("year",), since=0, until=None))
    assert values["scales"] == ["year"] and values["since"] == 0 and values["until"] is None
    json.dumps(values)


def _documented_overrides() -> list[tuple[str, str, str]]:
    """(where, method, key) of every ``--method M … --set key=value`` example in the docs and --help texts."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    found = []
    for path in [repo / "README.md", *sorted((repo / "raylurm").rglob("*.py"))]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            # a command line names its method; a row of the README's methods table starts with it
            method = re.search(r"--method[ =](\w+)", line) or re.match(r"\| `(\w+)`", line)
            for key in re.findall(r"--set (\w+)=", line) if method else ():
                found.append((f"{path.name}:{n}", method.group(1), key))
    return found


def test_every_documented_set_option_is_a_field_of_its_method():
    """``--help`` of raylurm.pretrain showed ``--set selection_ratio=0.3`` for DSS, whose field is selection_fraction."""
    import dataclasses as dc

    from raylurm.methods import METHODS

    found = _documented_overrides()
    assert {"dss", "lurm", "atrank", "sasrec"} <= {method for _, method, _ in found}  # --help example, methods table
    unknown = [(where, method) for where, method, _ in found if method not in METHODS]
    assert not unknown, f"documented for a method that does not exist: {unknown}"
    wrong = [(where, method, key) for where, method, key in found
             if key not in {f.name for f in dc.fields(METHODS[method].Config)}]
    assert not wrong, wrong
