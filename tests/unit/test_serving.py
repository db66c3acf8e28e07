"""Serving without Ray: incremental LURM states, ServedModel answers, request schemas, the Serve config."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from raylurm.boi.vocabulary import VocabularyConfig, build_vocabulary
from raylurm.methods import METHODS
from raylurm.methods.lurm import LURM, LURMConfig
from raylurm.registry import Registry
from raylurm.serving import incremental
from raylurm.serving.features import EventEncoder
from raylurm.serving.model import RequestError, ServedModel
from raylurm.serving.app import _plain, validation_error
from raylurm.serving.schemas import EmbedRequest, RecommendRequest, ServeArgs, SimilarRequest
from raylurm.train.batch import DataInfo, collate
from tests.helpers import register_model

ITEMS = [f"i{n}" for n in range(12)]
REPO = Path(__file__).resolve().parents[2]


def _ts(year: int, month: int, day: int = 1, hour: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, tzinfo=dt.timezone.utc).timestamp())


@pytest.fixture(scope="module")
def boi(tmp_path_factory):
    """A 12-item, 4-interest vocabulary with two behaviours, as a registry entry's boi/ holds it."""
    path = tmp_path_factory.mktemp("boi")
    rng = np.random.default_rng(0)
    vocab = build_vocabulary(pa.array(ITEMS), rng.normal(size=(12, 8)).astype(np.float32), VocabularyConfig(num_interests=4))
    vocab.save(path / "vocabulary")
    (path / "manifest.json").write_text(json.dumps({
        "vocabulary_hash": vocab.content_hash, "behaviors": ["click", "buy"], "num_interests": 4, "num_items": 12,
        "config": {"boi": {"scales": ["month", "year"], "max_sequence_length": 20, "sequences": True,
                           "on_unknown_items": "error", "since": None, "until": None, "num_partitions": None, "concurrency": None}}}))
    info = DataInfo(num_interests=4, num_items=12, num_behaviors=2, scales=("month", "year"), max_sequence_length=20,
                    vocabulary_hash=vocab.content_hash)
    return path, info


def _history(rng: np.random.Generator, n: int = 40) -> list[dict]:
    """Events over three years, several per month, both behaviours, in random order."""
    stamps = rng.integers(_ts(2001, 1), _ts(2003, 12, 28), size=n)
    return [{"item_id": ITEMS[rng.integers(12)], "timestamp": int(t), "behavior": ["click", "buy"][rng.integers(2)]}
            for t in stamps]


@pytest.fixture(scope="module")
def users_dir(boi, tmp_path_factory):
    encoder, rng = EventEncoder(boi[0]), np.random.default_rng(1)
    users = [f"u{n}" for n in range(10)]
    rows = encoder.encode(users, [_history(rng, int(rng.integers(5, 30))) for _ in users]).rows
    path = tmp_path_factory.mktemp("users")
    pq.write_table(rows, path / "part-0.parquet")
    return path


# ------------------------------------------------------------------------------------ incremental


def _month(event: dict) -> int:
    return int(np.datetime64(event["timestamp"], "s").astype("datetime64[M]").astype(int))


@pytest.mark.parametrize("scales", ["both", "month", "year"])
def test_month_by_month_updates_equal_the_full_recomputation(boi, scales):
    torch.manual_seed(0)
    model = LURM(LURMConfig(num_anchors=3, hidden_dim=8, scales=scales), boi[1]).eval()
    encoder = EventEncoder(boi[0])
    events = sorted(_history(np.random.default_rng(2), 60), key=lambda e: e["timestamp"])
    months = sorted({_month(e) for e in events})
    first = [e for e in events if _month(e) == months[0]]
    state = incremental.from_row(model, encoder.encode(["u"], [first]).rows.to_pylist()[0])
    seen = list(first)
    for month in months[1:]:  # one new period's events at a time, carried through the JSON wire format
        new = [e for e in events if _month(e) == month]
        state = incremental.from_json(model, json.loads(json.dumps(incremental.to_json(state))))
        state = incremental.advance(model, state, encoder.encode(["u"], [new]).rows.to_pylist()[0])
        seen += new
        full = model.embed(collate(encoder.encode(["u"], [seen]).rows, boi[1].scales))[0].numpy()
        np.testing.assert_allclose(incremental.represent(model, state), full, atol=1e-5)
    assert len(months) > 12  # the updates crossed year boundaries (the open year closed)


def test_events_inside_the_open_period_merge_into_it(boi):
    torch.manual_seed(1)
    model, encoder = LURM(LURMConfig(num_anchors=2, hidden_dim=4), boi[1]).eval(), EventEncoder(boi[0])
    early = [{"item_id": "i1", "timestamp": _ts(2002, 5, 3), "behavior": "click"},
             {"item_id": "i2", "timestamp": _ts(2002, 6, 3), "behavior": "click"}]
    late = [{"item_id": "i2", "timestamp": _ts(2002, 6, 20), "behavior": "buy"},
            {"item_id": "i7", "timestamp": _ts(2002, 6, 21), "behavior": "click"}]
    state = incremental.from_row(model, encoder.encode(["u"], [early]).rows.to_pylist()[0])
    state = incremental.advance(model, state, encoder.encode(["u"], [late]).rows.to_pylist()[0])
    full = model.embed(collate(encoder.encode(["u"], [early + late]).rows, boi[1].scales))[0].numpy()
    np.testing.assert_allclose(incremental.represent(model, state), full, atol=1e-6)
    assert state["month"].open_counts.sum() == pytest.approx(3.0)  # June: i2 twice, i7 once (hard assignment)


def test_bad_states_and_out_of_order_events_are_refused(boi):
    model, encoder = LURM(LURMConfig(num_anchors=2, hidden_dim=4), boi[1]).eval(), EventEncoder(boi[0])
    row = encoder.encode(["u"], [[{"item_id": "i1", "timestamp": _ts(2002, 5, 3), "behavior": "buy"}]]).rows.to_pylist()[0]
    good = incremental.to_json(incremental.from_row(model, row))
    older = encoder.encode(["u"], [[{"item_id": "i1", "timestamp": _ts(2002, 4, 3), "behavior": "buy"}]]).rows.to_pylist()[0]
    with pytest.raises(incremental.StateError, match="before the state's open month 2002-05"):
        incremental.advance(model, incremental.from_json(model, good), older)
    bad = [({"month": good["month"]}, "scales"),
           ({**good, "month": {**good["month"], "closed": "not base64!"}}, "not base64"),
           ({**good, "month": {**good["month"], "closed": "AAAAAA=="}}, "holds 1 values"),
           ({**good, "year": {**good["year"], "open_ids": [99], "open_counts": [1.0]}}, "interest ids in"),
           ({**good, "year": {**good["year"], "open_counts": [-1.0]}}, "non-negative"),
           ({**good, "year": {"period": 1}}, "malformed state"), (None, "malformed state"),
           ({**good, "year": {**good["year"], "open_ids": "x"}}, "malformed state")]
    for state, message in bad:
        with pytest.raises(incremental.StateError, match=message):
            incremental.from_json(model, state)


# ------------------------------------------------------------------------------------ ServedModel


@pytest.fixture(scope="module")
def registry(boi, tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("registry"))
    for method in METHODS:
        registry.offer(register_model(registry, method, boi[0], boi[1], name=f"{method}-a"))
    return registry


@pytest.mark.parametrize("method", sorted(METHODS))
def test_served_model_answers_as_the_model_does(registry, users_dir, method):
    served = ServedModel(registry.current(method), users_dir=str(users_dir))
    rows = pq.read_table(users_dir)
    direct = served.model.embed(collate(rows, served.scales)).numpy()
    np.testing.assert_allclose(served.vectors, direct, atol=1e-6)  # the index holds the model's own vectors
    np.testing.assert_allclose(served.lookup("u3"), direct[3], atol=1e-6)
    events = _history(np.random.default_rng(5), 12)
    row, unknown = served.rows(events + [{"item_id": "nope", "timestamp": _ts(2002, 1), "behavior": "buy"}])
    assert unknown == ["nope"]
    np.testing.assert_allclose(served.forward([row, rows.slice(2, 1)])[1], direct[2:3], atol=1e-6)  # batched = alone
    nearest = served.similar(direct[3], 3)
    assert nearest[0]["user_id"] == "u3" and nearest[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert "u3" not in [u["user_id"] for u in served.similar(direct[3], 3, exclude="u3")]
    assert served.can_recommend == (method in ("atrank", "dss", "sasrec")) and served.can_update == (method == "lurm")
    if served.can_recommend:
        scores = served.forward([row], scores=True)[0][0]
        top = served.top_items(scores, 5, seen=served.request_item_ids(events))
        assert not {t["item_id"] for t in top} & {e["item_id"] for e in events}
        assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    with pytest.raises(RequestError, match="not among the 10 served users") as err:
        served.lookup("u99")
    assert err.value.status == 404
    with pytest.raises(RequestError, match="none of the 1 events has an item"):
        served.rows([{"item_id": "nope", "timestamp": _ts(2002, 1), "behavior": "buy"}])
    with pytest.raises(RequestError, match="behavior 'view' is not one of"):
        served.rows([{"item_id": "i1", "timestamp": _ts(2002, 1), "behavior": "view"}])
    assert served.describe()["entry"] == f"{method}-a" and served.describe()["served_users"] == 10


def test_lurm_update_through_served_model_matches(registry, users_dir):
    served = ServedModel(registry.current("lurm"), users_dir=str(users_dir))
    events = sorted(_history(np.random.default_rng(7), 30), key=lambda e: e["timestamp"])
    cut = next(i for i in range(len(events) - 1, 0, -1) if _month(events[i - 1]) != _month(events[-1]))
    state = incremental.to_json(served.state_of(served.rows(events[:cut])[0]))
    vector, _, unknown = served.update(state, events[cut:])
    np.testing.assert_allclose(vector, served.forward([served.rows(events)[0]])[0][0], atol=1e-5)
    with pytest.raises(RequestError, match="state has scales"):
        served.update({"month": state["month"]}, events[cut:])


# ------------------------------------------------------------------------------------ schemas, config


def test_a_batch_runs_each_entry_with_its_own_model_and_the_ingress_keeps_two(boi, registry, users_dir):
    """placement "ingress": LocalMethod loads an entry once and keeps the served one and the one it replaced;
    a batch holding two entries (a swap in flight) runs each item with its own model, answers in order.
    (The batched endpoints need a Serve replica: tests/integration/test_serve.py runs them.)"""
    from raylurm.serving.app import LocalMethod, _forward

    for name, seed in (("lurm-z", 7), ("lurm-y", 8)):  # registered, not current
        register_model(registry, "lurm", boi[0], boi[1], name=name, seed=seed)
    args = ServeArgs(registry=str(registry.root), users=str(users_dir)).model_dump()
    histories = [_history(np.random.default_rng(n), 6 + n) for n in range(6)]

    async def run():
        local = LocalMethod("lurm", args)
        a, z = await asyncio.gather(local._served("lurm-a"), local._served("lurm-z"))
        assert await local._served("lurm-a") is a and list(local._models) == ["lurm-z", "lurm-a"]
        items = [(model, model.rows(h)[0]) for model, h in zip([a, z] * 3, histories)]
        answers = a, z, items, await _forward(items, scores=False), await local.describe("lurm-z")
        await local._served("lurm-y")  # a third entry: the least recently used one (lurm-a) is dropped
        assert list(local._models) == ["lurm-z", "lurm-y"]
        return answers

    a, z, items, vectors, described = asyncio.run(run())
    for (model, row), vector in zip(items, vectors):
        np.testing.assert_allclose(vector, model.forward([row])[0][0], atol=1e-6)
    assert not np.allclose(vectors[0], z.forward([items[0][1]])[0][0], atol=1e-4)  # the entries differ
    assert described["entry"] == "lurm-z"


def test_request_bodies_are_checked():
    event = {"item_id": "i1", "timestamp": 1}
    assert EmbedRequest(method="lurm", user_id="u1").user_id == "u1"
    for body, message in [({"method": "lurm"}, "exactly one of"), ({"method": "lurm", "events": [event], "user_id": 1}, "exactly one of"),
                          ({"method": "lurm", "events": []}, "is empty"), ({"method": "lurm", "user_id": "u", "state": {"entry": "e", "scales": {}}}, "needs the new"),
                          ({"method": "lurm", "events": [{**event, "extra": 1}]}, "Extra inputs"),
                          ({"method": "lurm", "events": [{**event, "timestamp": -5}]}, "greater than or equal"),
                          ({"method": "lurm", "events": [{"item_id": 1.5, "timestamp": 1}]}, "item_id")]:
        with pytest.raises(ValidationError, match=message):
            EmbedRequest(**body)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        SimilarRequest(method="lurm", user_id="u", k=0)
    with pytest.raises(ValidationError, match="at least 1 item"):
        RecommendRequest(method="dss", events=[])
    with pytest.raises(ValidationError, match="Extra inputs"):
        ServeArgs(registy="typo")


def test_a_malformed_state_is_a_validation_error_naming_its_field():
    event = {"item_id": "i1", "timestamp": 1}
    with pytest.raises(ValidationError, match=r"state\.entry\n +Field required") as err:
        EmbedRequest(method="lurm", events=[event], state={"x": "!!!"})
    assert "state.x\n  Extra inputs" in str(err.value)
    scale = {"period": 3, "closed": "AAAA", "open_ids": [1], "open_counts": [2.0]}
    with pytest.raises(ValidationError, match=r"state\.scales\.month\.open_ids\.0"):
        EmbedRequest(method="lurm", events=[event], state={"entry": "e", "scales": {"month": {**scale, "open_ids": ["a"]}}})
    body = EmbedRequest(method="lurm", events=[event], state={"entry": "e", "scales": {"month": scale}})
    assert _plain(body)["state"] == {"entry": "e", "scales": {"month": scale}}  # what the replica gets: plain dicts


def test_a_nan_in_a_request_body_is_answered_422_not_500():
    """Python's json writes float("nan") as NaN; FastAPI's default 422 echoed it and failed to serialise."""
    body = json.loads(json.dumps({"method": "lurm", "events": [{"item_id": "i1", "timestamp": float("nan")}]}))
    with pytest.raises(ValidationError) as err:
        EmbedRequest(**body)
    exc = RequestValidationError(err.value.errors())
    with pytest.raises(ValueError, match="Out of range float"):  # what the default handler's response did
        JSONResponse({"detail": jsonable_encoder(exc.errors())})
    response = asyncio.run(validation_error(None, exc))
    assert response.status_code == 422
    (detail,) = json.loads(response.body)["detail"]
    assert detail["loc"] == ["events", 0, "timestamp"] and detail["input"] == "nan"


def test_serve_config_file_deploys_the_typed_builder(registry, tmp_path):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from raylurm.ray_internals import build_serve_app
    from raylurm.serving.app import app_builder

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / "serve" / "config.yaml").read_text()))
    assert config.http_options.host == "127.0.0.1"
    (app,) = config.applications
    module, attr = app.import_path.split(":")
    assert getattr(__import__(module, fromlist=[attr]), attr) is app_builder
    ServeArgs(**app.args)  # every key of the file is a typed argument
    built = build_serve_app(app_builder, {**app.args, "registry": str(registry.root)})
    assert type(built).__name__ == "Application"
    with pytest.raises(ValueError, match="no current entry"):
        app_builder(ServeArgs(registry=str(tmp_path)))
    with pytest.raises(ValueError, match=r"no current entry for \['nope'\]"):
        app_builder(ServeArgs(registry=str(registry.root), methods=["nope"]))


def test_serve_cli_help_and_arguments():
    from raylurm.serve.__main__ import build_parser, serve_args

    args = build_parser().parse_args(["--methods", "lurm", "dss", "--max-k", "50", "--replica-cpus", "1"])
    parsed = serve_args(args)
    assert parsed.methods == ["lurm", "dss"] and parsed.max_k == 50 and parsed.num_cpus == 1 and args.host == "127.0.0.1"
    assert "promote" in build_parser().format_help()


def test_registry_add_serves_a_pretraining_run(boi, users_dir, tmp_path, monkeypatch, capsys):
    import shutil

    from raylurm.registry.__main__ import main
    from raylurm.train import checkpoint

    monkeypatch.setenv("RAYLURM_HOME", str(tmp_path / "home"))
    split_boi = tmp_path / "home" / "splits" / "ds-s9" / "boi" / "pretrain"
    shutil.copytree(boi[0], split_boi)
    shutil.copytree(users_dir, split_boi / "users")
    model = LURM(LURMConfig(num_anchors=2, hidden_dim=4), boi[1])
    run = tmp_path / "home" / "runs" / "my-run"
    for epoch in (1, 3):
        checkpoint.save(run / f"checkpoint_00000{epoch}", model, None,
                        checkpoint.meta_for("lurm", model.config, boi[1], epoch=epoch, step=epoch, split="s9"))
    assert main(["--registry", str(tmp_path / "reg"), "add", "my-run"]) == 0
    assert "* lurm      my-run.e3" in capsys.readouterr().out  # the latest checkpoint, served: lurm had no entry
    entry = Registry(tmp_path / "reg").current("lurm")
    served = ServedModel(entry)
    assert served.users_dir == split_boi / "users" and len(served.user_ids) == 10
    other = checkpoint.meta_for("lurm", model.config, dataclasses.replace(boi[1], vocabulary_hash="other"), epoch=1, split="s9")
    checkpoint.save(tmp_path / "elsewhere", model, None, other)
    assert main(["--registry", str(tmp_path / "reg"), "add", str(tmp_path / "elsewhere")]) == 2
    assert "is not the checkpoint's other" in capsys.readouterr().err
    checkpoint.save(tmp_path / "nosplit", model, None, checkpoint.meta_for("lurm", model.config, boi[1], epoch=1))
    assert main(["--registry", str(tmp_path / "reg"), "add", str(tmp_path / "nosplit")]) == 2
    assert "--boi" in capsys.readouterr().err
