"""The Serve application on the session's Ray, over real HTTP on 127.0.0.1.

Deployed from ``serve/config.yaml`` (its import path and arguments, with the test's registry and
served users), against registry entries of all four methods built on the Ray Data pipeline's BoI.
Every answer is checked against the same checkpoint run in-process.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from raylurm.methods import METHODS
from raylurm.registry import Registry
from raylurm.train.batch import DataInfo, collate
from raylurm.train.checkpoint import load_model
from tests.helpers import free_port, register_model

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LIMITS = {"max_events": 300, "max_k": 20, "max_body_bytes": 60_000}
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(url: str, body=None, raw: bytes | None = None, timeout: float = 60) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _events_of(table, user) -> list[dict]:
    rows = table.filter(pc.equal(table["user_id"], user)).sort_by("timestamp").to_pylist()
    return [{"item_id": r["item_id"], "timestamp": r["timestamp"], "behavior": r["behavior"]} for r in rows]


@pytest.fixture(scope="module")
def app(ray_runtime, boi_dir, tmp_path_factory):
    from ray import serve

    from raylurm.ray_internals import build_serve_app
    from raylurm.serving.app import app_builder

    registry = Registry(tmp_path_factory.mktemp("registry"))
    info = DataInfo.from_boi(boi_dir)
    for method in sorted(METHODS):
        registry.offer(register_model(registry, method, boi_dir, info, name=f"{method}-a", seed=0))
    register_model(registry, "lurm", boi_dir, info, name="lurm-b", seed=1)  # registered, not serving
    (config,) = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())["applications"]
    assert config["import_path"] == "raylurm.serving.app:app_builder"
    args = {**config["args"], "registry": str(registry.root), "users": str(boi_dir / "users"), "num_cpus": 0.1,
            "reload_interval_s": 0, "max_batch_size": 8, **LIMITS}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_serve_app(app_builder, args), name="raylurm", route_prefix="/")
    events = pq.read_table(Path(json.loads((boi_dir / "manifest.json").read_text())["dataset"]) / "events")
    users = pq.read_table(boi_dir / "users")
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", registry=registry, events=events, users=users,
                          user=users["user_id"][3].as_py(), boi_dir=boi_dir, info=info)
    serve.shutdown()


def _in_process(entry, rows) -> np.ndarray:
    model, meta = load_model(entry.path)
    return model.embed(collate(rows, tuple(meta["info"]["scales"]))).numpy()


def test_health_models_and_openapi(app):
    status, health = _http(app.url + "/healthz")
    assert status == 200 and health == {"status": "ok", "methods": {m: f"{m}-a" for m in METHODS}}
    status, models = _http(app.url + "/v1/models")
    by_method = {m["method"]: m for m in models["models"]}
    assert status == 200 and set(by_method) == set(METHODS)
    assert by_method["lurm"]["entry"] == "lurm-a" and by_method["lurm"]["metrics"] == {"val_auc": 0.5}
    assert by_method["lurm"]["dim"] == 3 * 8 and by_method["dss"]["recommend"] and by_method["lurm"]["incremental"]
    assert by_method["lurm"]["served_users"] == app.users.num_rows
    status, spec = _http(app.url + "/openapi.json")
    assert status == 200 and {"/v1/embed", "/v1/similar-users", "/v1/recommend", "/v1/models", "/v1/reload",
                              "/healthz"} <= set(spec["paths"])
    assert {"EmbedRequest", "SimilarRequest", "RecommendRequest", "Event"} <= set(spec["components"]["schemas"])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_embed_matches_the_checkpoint_in_process(app, method):
    entry = app.registry.current(method)
    row = app.users.filter(pc.equal(app.users["user_id"], app.user))
    expected = _in_process(entry, row)[0]
    status, by_id = _http(app.url + "/v1/embed", {"method": method, "user_id": app.user})
    assert status == 200 and by_id["entry"] == f"{method}-a" and by_id["dim"] == len(expected)
    np.testing.assert_allclose(by_id["embedding"], expected, atol=1e-5)
    status, by_events = _http(app.url + "/v1/embed", {"method": method, "events": _events_of(app.events, app.user)})
    assert status == 200 and by_events["unknown_items"] == []
    np.testing.assert_allclose(by_events["embedding"], expected, atol=1e-5)  # raw events -> the pipeline's rows


def test_similar_users_and_recommend(app):
    status, out = _http(app.url + "/v1/similar-users", {"method": "lurm", "user_id": app.user, "k": 5})
    scores = [u["score"] for u in out["users"]]
    assert status == 200 and len(out["users"]) == 5 and app.user not in [u["user_id"] for u in out["users"]]
    assert scores == sorted(scores, reverse=True)
    events = _events_of(app.events, app.user)
    status, out = _http(app.url + "/v1/similar-users", {"method": "adaptssr", "events": events, "k": 3})
    assert status == 200 and out["users"][0]["user_id"] == app.user  # the user's own history is nearest to itself
    assert out["users"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    for method in ("atrank", "dss", "sasrec"):
        status, out = _http(app.url + "/v1/recommend", {"method": method, "events": events, "k": 5})
        model, meta = load_model(app.registry.current(method).path)
        vocab = pq.read_table(app.registry.current(method).path / "boi" / "vocabulary" / "items.parquet")["item_id"].to_pylist()
        import torch

        row = app.users.filter(pc.equal(app.users["user_id"], app.user))
        scores = model.score_items(collate(row, tuple(meta["info"]["scales"])), torch.arange(len(vocab)))[0].numpy()
        seen = {e["item_id"] for e in events}
        expected = [vocab[i] for i in np.argsort(-scores, kind="stable") if vocab[i] not in seen][:5]
        assert status == 200 and [i["item_id"] for i in out["items"]] == expected


def test_lurm_state_plus_one_new_month_equals_the_full_recomputation(app):
    events = _events_of(app.events, app.user)
    months = [np.datetime64(e["timestamp"], "s").astype("datetime64[M]") for e in events]
    cut = months.index(months[-1])
    assert cut > 0
    status, first = _http(app.url + "/v1/embed", {"method": "lurm", "events": events[:cut], "return_state": True})
    assert status == 200 and first["state"]["entry"] == "lurm-a"
    status, updated = _http(app.url + "/v1/embed", {"method": "lurm", "events": events[cut:], "state": first["state"]})
    status_full, full = _http(app.url + "/v1/embed", {"method": "lurm", "events": events})
    assert status == status_full == 200
    np.testing.assert_allclose(updated["embedding"], full["embedding"], atol=1e-5)
    status, again = _http(app.url + "/v1/embed", {"method": "lurm", "events": events[:1], "state": updated["state"]})
    assert status == 422 and "before the state's open month" in again["detail"]


def _bad_requests(app) -> list[tuple[str, dict | bytes, int, str]]:
    good = _events_of(app.events, app.user)[:3]
    event = good[0]
    return [
        ("/v1/embed", {"method": "word2vec", "events": good}, 404, "is not served"),
        ("/v1/embed", b"{not json", 422, "JSON decode error"),
        ("/v1/embed", {"method": "lurm", "events": []}, 422, "is empty"),
        ("/v1/embed", {"method": "lurm"}, 422, "exactly one of"),
        ("/v1/embed", {"method": "lurm", "events": [{**event, "item_id": 1.5}]}, 422, "item_id"),
        ("/v1/embed", {"method": "lurm", "events": [{**event, "timestamp": -1}]}, 422, "greater than or equal to 0"),
        ("/v1/embed", {"method": "lurm", "events": [{**event, "colour": "red"}]}, 422, "Extra inputs"),
        ("/v1/embed", {"method": "lurm", "events": [{**event, "behavior": "teleport"}]}, 422, "is not one of the model's"),
        ("/v1/embed", {"method": "lurm", "events": [{**event, "item_id": 10 ** 9}]}, 422, "none of the 1 events has an item"),
        ("/v1/embed", {"method": "lurm", "user_id": "nobody"}, 404, "not among the"),
        ("/v1/embed", {"method": "lurm", "events": [event] * (LIMITS["max_events"] + 1)}, 413, "over max_events"),
        ("/v1/embed", {"method": "lurm", "events": [{**event, "behavior": "x" * 250}] * 290}, 413, "over max_body_bytes"),
        ("/v1/embed", {"method": "atrank", "events": good, "return_state": True}, 422, "LURM's"),
        ("/v1/embed", {"method": "lurm", "events": good, "state": {"entry": "lurm-a", "scales": {"month": {}}}}, 422, "state"),
        ("/v1/embed", {"method": "lurm", "events": good, "state": {"x": "!!!"}}, 422, '"state", "entry"'),
        ("/v1/embed", {"method": "lurm", "events": [{**event, "timestamp": float("nan")}]}, 422, '"input": "nan"'),
        ("/v1/embed", {"method": "lurm", "user_id": app.user, "return_state": True}, 422, "needs the user's events"),
        ("/v1/similar-users", {"method": "lurm", "user_id": app.user, "k": 0}, 422, "greater than or equal to 1"),
        ("/v1/similar-users", {"method": "lurm", "user_id": app.user, "k": LIMITS["max_k"] + 1}, 422, "over max_k"),
        ("/v1/recommend", {"method": "lurm", "events": good, "k": 3}, 422, "no next-item head"),
        ("/v1/recommend", {"method": "dss", "events": good, "k": 10 ** 6}, 422, "over max_k"),
    ]


def test_bad_input_gets_a_4xx_with_the_reason(app):
    for path, body, status, message in _bad_requests(app):
        got, answer = _http(app.url + path, raw=body) if isinstance(body, bytes) else _http(app.url + path, body)
        assert got == status and message in json.dumps(answer), (path, str(body)[:120], got, answer)
    assert _http(app.url + "/healthz")[0] == 200  # nothing of the above hurt the replicas


def test_concurrent_requests_get_their_own_answers(app):
    users = app.users["user_id"].to_pylist()[:12]
    requests = [("/v1/embed", {"method": m, "events": _events_of(app.events, u)}) for u in users for m in ("lurm", "dss")]
    requests += [("/v1/similar-users", {"method": "adaptssr", "user_id": u, "k": 4}) for u in users]
    alone = [_http(app.url + path, body) for path, body in requests]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:  # 36 requests in flight: batched by @serve.batch
        together = list(pool.map(lambda r: _http(app.url + r[0], r[1]), requests))
    for (status_a, a), (status_b, b) in zip(alone, together):
        assert status_a == status_b == 200
        if "embedding" in a:
            np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-5)
        else:
            assert [u["user_id"] for u in a["users"]] == [u["user_id"] for u in b["users"]]


def test_promote_in_the_registry_swaps_the_served_model(app):
    events = _events_of(app.events, app.user)
    _, before = _http(app.url + "/v1/embed", {"method": "lurm", "events": events, "return_state": True})
    app.registry.promote("lurm", "lurm-b")
    assert _http(app.url + "/healthz")[1]["methods"]["lurm"] == "lurm-a"  # reload_interval_s=0: only on request
    status, reload = _http(app.url + "/v1/reload", {})
    assert status == 200 and reload["changed"] == {"lurm": {"from": "lurm-a", "to": "lurm-b"}}
    _, models = _http(app.url + "/v1/models")
    assert {m["method"]: m["entry"] for m in models["models"]}["lurm"] == "lurm-b"
    _, after = _http(app.url + "/v1/embed", {"method": "lurm", "events": events})
    row = app.users.filter(pc.equal(app.users["user_id"], app.user))
    np.testing.assert_allclose(after["embedding"], _in_process(app.registry.get("lurm", "lurm-b"), row)[0], atol=1e-5)
    assert not np.allclose(after["embedding"], before["embedding"], atol=1e-3)
    status, stale = _http(app.url + "/v1/embed", {"method": "lurm", "events": events[-1:], "state": before["state"]})
    assert status == 409 and "now serves 'lurm-b'" in stale["detail"]
    assert _http(app.url + "/v1/reload", {})[1]["changed"] == {}


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, limit_s: float = 180) -> dict:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return _http(url + "/healthz", timeout=5)[1]
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            time.sleep(2)
    raise AssertionError(f"no /healthz in {limit_s} s:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("how", ["python -m raylurm.serve", "serve run serve/config.yaml"])
def test_both_commands_start_the_app(app, tmp_path, how):
    """Each command starts its own embedded Ray (own temp dir), serves on loopback and stops on a signal.

    ``python -m raylurm.serve`` runs with ``--placement ingress`` (the models inside the ingress replica, a
    promote picked up there too), ``serve run serve/config.yaml`` with the config's per-method deployments."""
    port = free_port()
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rs", dir="/tmp")}
    if how.startswith("python"):  # no --users: this registry's entries record none, so only similar-users would 404
        command = [sys.executable, "-m", "raylurm.serve", "--port", str(port), "--registry", str(app.registry.root),
                   "--methods", "dss", "lurm", "--num-cpus", "1", "--reload-interval-s", "1", "--placement", "ingress"]
    else:
        config = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
        config["http_options"]["port"] = port
        config["applications"][0]["args"].update(registry=str(app.registry.root), methods=["dss"])
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        command = [str(Path(sys.executable).parent / "serve"), "run", str(tmp_path / "config.yaml")]
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = _wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        current = {m: app.registry.current(m).name for m in (("dss", "lurm") if how.startswith("python") else ("dss",))}
        assert health["methods"] == current
        status, out = _http(f"http://127.0.0.1:{port}/v1/recommend",
                            {"method": "dss", "events": _events_of(app.events, app.user), "k": 2})
        assert status == 200 and len(out["items"]) == 2
        status, out = _http(f"http://127.0.0.1:{port}/v1/embed", {"method": "dss", "events": _events_of(app.events, app.user)})
        row = app.users.filter(pc.equal(app.users["user_id"], app.user))
        assert status == 200 and out["entry"] == "dss-a"
        np.testing.assert_allclose(out["embedding"], _in_process(app.registry.get("dss", "dss-a"), row)[0], atol=1e-5)
        if how.startswith("python"):  # the ingress holds both methods: one batch queue, each item with its own model
            users = app.users["user_id"].to_pylist()[:6]
            bodies = [{"method": m, "events": _events_of(app.events, u)} for u in users for m in ("dss", "lurm")]
            with concurrent.futures.ThreadPoolExecutor(12) as pool:
                answers = list(pool.map(lambda b: _http(f"http://127.0.0.1:{port}/v1/embed", b), bodies))
            for body, (status, answer) in zip(bodies, answers):
                user_row = app.users.filter(pc.equal(app.users["user_id"], users[bodies.index(body) // 2]))
                expected = _in_process(app.registry.get(body["method"], current[body["method"]]), user_row)[0]
                assert status == 200 and answer["method"] == body["method"]
                np.testing.assert_allclose(answer["embedding"], expected, atol=1e-5)  # the periodic registry check (1 s here) picks up a promote by itself
            app.registry.promote("dss", register_model(app.registry, "dss", app.boi_dir, app.info, name="dss-b", seed=2).name)
            deadline = time.monotonic() + 60
            while _http(f"http://127.0.0.1:{port}/healthz")[1]["methods"]["dss"] != "dss-b":
                assert time.monotonic() < deadline, "the promoted entry was not picked up in 60 s"
                _http(f"http://127.0.0.1:{port}/v1/recommend", {"method": "dss", "events": _events_of(app.events, app.user), "k": 2})
                time.sleep(1)
    finally:
        app.registry.promote("dss", "dss-a")
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode in (0, -signal.SIGINT, 130), log.read_text()[-3000:]
