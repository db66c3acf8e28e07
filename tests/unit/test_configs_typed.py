"""Every config class is a ``typed_config``: one validation style, compact errors, pickle/JSON round trips;
and the command-line flags generated from the fields (``cli.add_config_arguments``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import typing
from typing import Annotated, Literal

import pytest
from pydantic import Field, TypeAdapter, ValidationError

from raylurm import cli
from raylurm.boi.build import BuildConfig
from raylurm.boi.embeddings.config import ItemEmbeddingConfig
from raylurm.boi.pipeline import BoiConfig
from raylurm.boi.vocabulary import VocabularyConfig
from raylurm.config import ConfigError, apply_overrides, from_dict, options, to_dict, typed_config
from raylurm.data.synth import SynthConfig
from raylurm.evaluate.probe import ProbeConfig
from raylurm.evaluate.split import SplitConfig
from raylurm.evaluate.tasks import EvalConfig
from raylurm.methods import METHODS, atrank, lurm
from raylurm.methods.adaptssr import AdaptSSRConfig
from raylurm.methods.atrank import ATRankConfig
from raylurm.methods.dss import DSSConfig
from raylurm.methods.lurm import LURMConfig
from raylurm.methods.sasrec import SASRecConfig
from raylurm.pretrain import __main__ as pretrain
from raylurm.train.config import TrainConfig
from raylurm.tune.validation import ValidationConfig

# every config class, with one invalid value and the field its error must name
INVALID = {
    SplitConfig: ({"cutoff_quantile": 1.0}, "cutoff_quantile"),
    ProbeConfig: ({"weight_decays": ()}, "weight_decays"),
    EvalConfig: ({"negatives": 0}, "negatives"),
    ValidationConfig: ({"batch_size": 0}, "batch_size"),
    DSSConfig: ({"num_layers": 0}, "num_layers"),
    ATRankConfig: ({"loss": "bpr"}, "loss"),
    LURMConfig: ({"temperature": 0.0}, "temperature"),
    AdaptSSRConfig: ({"mask_ratio": 0.0}, "mask_ratio"),
    SASRecConfig: ({"loss": "bpr"}, "loss"),
    TrainConfig: ({"epochs": 0}, "epochs"),
    VocabularyConfig: ({"top_k": 0}, "top_k"),
    BuildConfig: ({"boi": {"max_sequence_length": 0}}, "max_sequence_length"),
    BoiConfig: ({"on_unknown_items": "ignore"}, "on_unknown_items"),
    ItemEmbeddingConfig: ({"dim": 0}, "dim"),
    SynthConfig: ({"users": 0}, "users"),
}
CLASSES = list(INVALID)
ids = [cls.__name__ for cls in CLASSES]


def test_the_list_covers_every_method_config():
    assert {cls.Config for cls in METHODS.values()} <= set(CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=ids)
def test_defaults_round_trip_through_pickle_and_json(cls):
    config = cls()
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    assert pickle.loads(pickle.dumps(config)) == config  # configs travel to Ray workers
    values = json.loads(json.dumps(to_dict(config)))  # ... and into checkpoints' meta.json (tuples become lists)
    again = from_dict(cls, values)
    assert again == config and type(again) is cls
    assert dataclasses.replace(config) == config and hash(again) == hash(config)
    # dataclasses.fields keeps plain defaults (code reads f.default)
    assert cls(**{f.name: f.default for f in dataclasses.fields(cls)}) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.__setattr__(dataclasses.fields(cls)[0].name, None)


@pytest.mark.parametrize("cls", CLASSES, ids=ids)
def test_an_invalid_value_is_one_line_naming_class_field_and_value(cls):
    change, field = INVALID[cls]
    with pytest.raises(ValueError, match=field) as err:
        cls(**change)
    message = str(err.value)
    assert isinstance(err.value, ConfigError) and "\n" not in message and "errors.pydantic.dev" not in message
    assert message.startswith(f"invalid {cls.__name__}: ")
    value = next(iter(change.values()))
    assert repr(value if not isinstance(value, dict) else next(iter(value.values()))) in message
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(cls(), **change)  # replace validates too
    with pytest.raises(ValueError, match=field):
        from_dict(cls, json.loads(json.dumps(change)))


@pytest.mark.parametrize("cls", CLASSES, ids=ids)
def test_an_unknown_key_is_rejected(cls):
    with pytest.raises(ValueError, match=r"unknown .* \['no_such_option'\]; valid: \["):
        from_dict(cls, {"no_such_option": 1})
    with pytest.raises(ValueError, match="no_such_option"):
        cls(no_such_option=1)


def _fields_of(kind):
    for cls in CLASSES:
        for name, hint in typing.get_type_hints(cls).items():
            if hint is kind or hint == kind | None:
                yield pytest.param(cls, name, id=f"{cls.__name__}.{name}")


@pytest.mark.parametrize("cls, name", list(_fields_of(int)))
def test_int_fields_reject_bools_floats_and_strings(cls, name):
    for bad in (True, 2.0, "3"):
        with pytest.raises(ValueError, match=name):
            cls(**{name: bad})


@pytest.mark.parametrize("cls, name", list(_fields_of(float)))
def test_float_fields_take_ints_but_no_bools_strings_or_nan(cls, name):
    for bad in (True, "0.5", float("nan"), float("inf")):
        with pytest.raises(ValueError, match=name):
            cls(**{name: bad})


@pytest.mark.parametrize("change, message", [
    ({"num_heads": 3}, r"num_heads \(3\) must divide hidden_dim \(64\)"),
    ({"hidden_dim": 0, "num_heads": 3}, "hidden_dim=0"),  # field errors first: no modulo by a bad value
])
def test_cross_field_rules_come_after_the_field_rules(change, message):
    with pytest.raises(ValueError, match=message):
        DSSConfig(**change)


@pytest.mark.parametrize("cls, change, message", [
    (ATRankConfig, {"hidden_dim": 100}, "divisible by num_spaces"),
    (AdaptSSRConfig, {"augmentations": ("mask", "mask")}, "must not repeat"),
    (AdaptSSRConfig, {"lambda_mode": "median"}, "lambda_mode must be one of"),
    (EvalConfig, {"fractions": (0.5, 0.5, 0.5)}, "fractions summing to 1"),
    (EvalConfig, {"tasks": ("profiling", "ranking")}, "tasks must be a subset"),
    (ValidationConfig, {"fractions": (0.6, 0.4, 0.0)}, "three positive shares"),
    (SynthConfig, {"items": 10}, r"items must be >= num_topics \(50\), got 10"),
    (SynthConfig, {"cart_prob": 0.7, "buy_prob": 0.5}, r"cart_prob \+ buy_prob must be <= 1"),
    (SynthConfig, {"start": "2095-01-01", "years": 10}, r"leaves \[1970, 2100\)"),
])
def test_cross_field_rules(cls, change, message):
    with pytest.raises(ValueError, match=f"invalid {cls.__name__}: .*{message}"):
        cls(**change)


def test_a_bad_time_range_stays_a_data_error():
    from raylurm.data.errors import DataError

    with pytest.raises(DataError, match="time range"):
        BoiConfig(since=10, until=5)


def test_json_lists_and_dicts_load_into_tuples_and_nested_configs():
    config = from_dict(EvalConfig, {"seeds": [4], "probe": {"weight_decays": [0.1]}, "tasks": ["category"]})
    assert config.seeds == (4,) and config.probe == ProbeConfig(weight_decays=(0.1,)) and config.tasks == ("category",)
    assert AdaptSSRConfig(augmentations=["crop"]).augmentations == ("crop",)  # as before: a list is taken as a tuple
    with pytest.raises(ValueError, match=r"seeds\[1\]=True"):  # items keep their strict type
        from_dict(EvalConfig, {"seeds": [1, True]})
    with pytest.raises(ValueError, match=r"^invalid BoiConfig: scales\[1\]='week': input should be 'month' or 'year'$"):
        BoiConfig(scales=["month", "week"])
    build = from_dict(BuildConfig, to_dict(BuildConfig(boi=BoiConfig(scales=("year",)))))
    assert build.boi.scales == ("year",) and isinstance(build.boi, BoiConfig)


def test_an_override_of_a_nested_config_is_json():
    config = apply_overrides(EvalConfig(), ['probe={"hidden_dim": 64}'])
    assert config.probe == ProbeConfig(hidden_dim=64)
    for bad in ('probe={"hidden_dim": 0}', 'probe={"hidden_dims": 64}', "probe=[64]", "probe=x"):
        with pytest.raises(ValueError, match="bad value for probe: "):
            apply_overrides(EvalConfig(), [bad])


def test_literal_choices_match_the_tables_they_select_from():
    assert set(typing.get_args(atrank.Loss)) == set(atrank.LOSSES)
    assert set(typing.get_args(lurm.Scales)) == set(lurm.SCALES)


# ----------------------------------------------------------------------------- generated CLI flags


@typed_config
class Toy:
    count: Annotated[int, Field(ge=1, description="how many (100 % of them)")] = 3
    share: Annotated[float, Field(gt=0, description="a share")] = 0.5
    mode: Annotated[Literal["a", "b"], Field(description="the mode")] = "a"
    tags: Annotated[tuple[Literal["x", "y", "z"], ...], Field(min_length=1, description="tags")] = ("x",)
    limit: Annotated[int | None, Field(ge=1, description="a cap (default: none)")] = None
    on: Annotated[bool, Field(description="switch it on")] = False
    keep: Annotated[bool, Field(description="keep it")] = True
    name_of_thing: str = "n"


def _parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy", formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_arguments(parser, Toy, **kwargs)
    return parser


def test_generated_flags_take_types_defaults_and_choices_from_the_fields():
    parser = _parser()
    assert cli.config_from_args(parser.parse_args([]), Toy) == Toy()
    args = parser.parse_args(["--count", "7", "--share", "1", "--mode", "b", "--tags", "y,z", "--limit", "4", "--on",
                              "--no-keep", "--name-of-thing", "m"])
    config = cli.config_from_args(args, Toy)
    assert config == Toy(count=7, share=1.0, mode="b", tags=("y", "z"), limit=4, on=True, keep=False, name_of_thing="m")
    assert type(config.share) is float
    assert cli.config_from_args(parser.parse_args(["--tags", "z,"]), Toy).tags == ("z",)
    for bad in (["--count", "2.5"], ["--mode", "c"], ["--tags", "x,w"], ["--tags", ""], ["--on", "true"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    with pytest.raises(ValueError, match="count=0"):  # argparse checks the type, the config the rules
        cli.config_from_args(parser.parse_args(["--count", "0"]), Toy)


def test_generated_help_is_the_description_and_the_default():
    text = " ".join(_parser().format_help().split())
    assert "--count COUNT how many (100 % of them) (default: 3)" in text
    assert "--mode {a,b} the mode (default: a)" in text
    assert "--tags TAGS tags (comma-separated: x,y,z) (default: ('x',))" in text
    assert "--limit LIMIT a cap (default: none)" in text and "(default: None)" not in text
    assert "--on switch it on" in text and "--keep, --no-keep keep it (default: True)" in text
    assert "--name-of-thing NAME_OF_THING name of thing (default: n)" in text


def test_fields_rename_and_extra_pick_order_and_replace():
    parser = _parser(fields=["mode", "count"], rename={"count": "--how-many"},
                     extra={"mode": {"help": "other help", "choices": ["b"], "default": "b"}})
    flags = [a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"]
    assert flags == ["--mode", "--how-many"]
    args = parser.parse_args(["--how-many", "9"])
    assert args.how_many == 9 and "other help" in parser.format_help()
    assert cli.config_from_args(args, Toy, ["mode", "count"], rename={"count": "--how-many"}, share=0.25) == \
        Toy(mode="b", count=9, share=0.25)
    with pytest.raises(ValueError, match="no field"):
        _parser(fields=["nope"])


def test_options_describe_every_field():
    described = {o.name: o for o in options(Toy)}
    assert list(described) == [f.name for f in dataclasses.fields(Toy)]
    assert described["mode"].choices == ("a", "b") and described["tags"].choices == ("x", "y", "z")
    assert described["count"].description.startswith("how many") and described["name_of_thing"].description is None


def test_pretrain_flags_are_the_train_config_fields_with_their_defaults():
    parser = pretrain.build_parser()
    args = parser.parse_args([])
    assert cli.config_from_args(args, TrainConfig, ("method", *pretrain.TRAIN_FLAGS)) == TrainConfig()
    args = parser.parse_args(["--method", "dss", "--epochs", "3", "--num-workers", "1", "--use-gpu", "--batch-size", "8",
                              "--lr", "0.01", "--seed", "4", "--max-steps-per-epoch", "2", "--max-failures", "0"])
    assert cli.config_from_args(args, TrainConfig, ("method", *pretrain.TRAIN_FLAGS)) == TrainConfig(
        method="dss", epochs=3, num_workers=1, use_gpu=True, batch_size=8, lr=0.01, seed=4, max_steps_per_epoch=2,
        max_failures=0)


def test_pretrain_a_bad_value_is_one_error_line_and_exit_2(capsys):
    assert pretrain.main(["--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: invalid TrainConfig: epochs=0: input should be greater than or equal to 1\n"
    assert pretrain.main(["--method", "lurm", "--set", "num_anchors=0"]) == 2
    assert "num_anchors=0" in capsys.readouterr().err


def test_list_options_prints_every_option_and_its_default_as_json(capsys):
    assert pretrain.main(["--method", "adaptssr", "--list-options"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == [f.name for f in dataclasses.fields(AdaptSSRConfig)]
    assert from_dict(AdaptSSRConfig, printed) == AdaptSSRConfig()  # the printed defaults read back


def test_execute_prints_a_raw_pydantic_error_on_one_line(capsys):
    def run(args):
        TypeAdapter(Annotated[int, Field(ge=1)]).validate_python(0)

    parser = argparse.ArgumentParser()
    cli.add_common_arguments(parser)
    assert cli.execute(run, parser, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: invalid ") and "greater than or equal to 1" in err
    with pytest.raises(ValidationError):
        run(None)
