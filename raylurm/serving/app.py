"""The Ray Serve application: a FastAPI ingress in front of one model deployment per method.

Layout (``serve status`` shows it)::

    Api (FastAPI ingress, /v1/..., /healthz, /docs)
      ├── lurm      MethodModel   multiplexed over the method's registry entries
      ├── atrank    MethodModel      (model id = entry name; @serve.batch per entry)
      ├── dss       MethodModel
      └── adaptssr  MethodModel

``placement: ingress`` (``ServeArgs.placement``) loads the same models inside the ingress replica
instead: no second hop (ingress -> model replica), at the price of one replica, batch queue set and
GPU share for all methods together (one ``@serve.batch`` queue too: a batch may mix methods, each item
runs with its own model) — ``python -m raylurm.bench serve`` measures both placements.

Why one deployment per method, each multiplexed over its own entries: the four models differ in
cost by an order of magnitude (ATRank's next-item scoring vs LURM's bag sums), so each gets its
own replicas, CPU/GPU share and batch queue, and a slow method never delays a fast one's batch.
Within a method, Serve's model multiplexing keys each request by the registry entry the ingress
currently serves; a promote in the registry (``python -m raylurm.registry promote``) therefore
swaps models without redeploying: the ingress notices the new ``CURRENT`` (checked as requests
arrive, at most every ``reload_interval_s``, or at once on ``POST /v1/reload``), loads it on a replica, then routes new
requests to it while requests already routed finish on the old entry (two entries fit a replica).

Request problems are answered with 4xx and a message; the model replicas return them as values
(``{"error": …}``), never as exceptions, so one bad request cannot fail a whole batch.
"""


import asyncio
import collections
import logging
import math
import time
from typing import Any

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from raylurm import __version__
from raylurm.methods import METHODS
from raylurm.registry import Registry
from raylurm.serving import incremental
from raylurm.serving.model import RequestError, ServedModel
from raylurm.serving.schemas import (
    EmbedRequest,
    EmbedResponse,
    Health,
    RecommendRequest,
    RecommendResponse,
    ServeArgs,
    SimilarRequest,
    SimilarResponse,
)

log = logging.getLogger(__name__)

MODELS_PER_REPLICA = 2  # the serving entry and the one it replaced (requests in flight during a swap)


class MethodLogic:
    """One method's request logic over its loaded models: embed, similar users, recommend, describe.

    Forwards are batched (``@serve.batch``) across concurrent requests; a batch item carries the
    model it was encoded for, so a batch formed while an entry is being swapped stays correct.
    Where the models live is the subclass's business: :class:`MethodModel` (a deployment of its
    own, multiplexed by entry) or :class:`LocalMethod` (inside the ingress replica).
    """

    def __init__(self, method: str, args: dict):
        self.method, self.args = method, ServeArgs(**args)
        self.registry = Registry(self.args.registry)
        for batched in (self._embed_batch, self._score_batch):
            batched.set_max_batch_size(self.args.max_batch_size)
            batched.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)

    async def _load(self, entry: str) -> ServedModel:
        found = self.registry.get(self.method, entry)
        return await asyncio.to_thread(ServedModel, found, self.args.device, self.args.users, self.args.index_factory)

    async def _served(self, entry: str | None) -> ServedModel:
        raise NotImplementedError

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.001)
    async def _embed_batch(self, items: list[tuple[ServedModel, pa.Table]]) -> list[np.ndarray]:
        return await _forward(items, scores=False)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.001)
    async def _score_batch(self, items: list[tuple[ServedModel, pa.Table]]) -> list[np.ndarray]:
        return await _forward(items, scores=True)

    async def _vector(self, served: ServedModel, request: dict) -> tuple[np.ndarray, list, pa.Table | None]:
        """The request's representation, its unknown items and its encoded row (None for a served user_id)."""
        if request.get("user_id") is not None:
            return served.lookup(request["user_id"]), [], None
        row, unknown = served.rows(request["events"])
        return await self._embed_batch((served, row)), unknown, row

    async def embed(self, request: dict, entry: str | None = None) -> dict:
        async def answer(served: ServedModel) -> dict:
            out: dict[str, Any] = {}
            if request.get("state") is not None or request.get("return_state"):
                if not served.can_update:
                    raise RequestError(f"incremental updates ('state', 'return_state') are LURM's; {self.method} has none")
            if request.get("state") is not None:
                state = request["state"]
                if state.get("entry") != served.entry.name:
                    raise RequestError(f"the state was made by entry {state.get('entry')!r}; {self.method} now serves "
                                       f"{served.entry.name!r}: send the full history once to get a new state", status=409)
                vector, new_state, unknown = await asyncio.to_thread(served.update, state.get("scales"), request["events"])
                out["state"] = {"entry": served.entry.name, "scales": incremental.to_json(new_state)}
            else:
                if request.get("return_state") and request.get("events") is None:
                    raise RequestError("'return_state' needs the user's events (a state is built from the history)")
                vector, unknown, row = await self._vector(served, request)
                if request.get("return_state"):
                    out["state"] = {"entry": served.entry.name, "scales": incremental.to_json(served.state_of(row))}
            return {"dim": served.dim, "embedding": vector.tolist(), "unknown_items": unknown, **out}
        return await self._answer(answer, entry)

    async def similar(self, request: dict, entry: str | None = None) -> dict:
        async def answer(served: ServedModel) -> dict:
            vector, unknown, _ = await self._vector(served, request)
            return {"users": served.similar(vector, request["k"], exclude=request.get("user_id")), "unknown_items": unknown}
        return await self._answer(answer, entry)

    async def recommend(self, request: dict, entry: str | None = None) -> dict:
        async def answer(served: ServedModel) -> dict:
            if not served.can_recommend:
                raise RequestError(f"{self.method} has no next-item head; /v1/recommend serves atrank, dss and sasrec", status=422)
            row, unknown = served.rows(request["events"])
            scores = await self._score_batch((served, row))
            seen = served.request_item_ids(request["events"]) if request.get("exclude_seen", True) else ()
            return {"items": served.top_items(scores, request["k"], seen), "unknown_items": unknown}
        return await self._answer(answer, entry)

    async def describe(self, entry: str | None = None) -> dict:
        return (await self._served(entry)).describe()

    async def _answer(self, answer, entry: str | None) -> dict:
        served = await self._served(entry)
        try:
            return {"method": self.method, "entry": served.entry.name, **await answer(served)}
        except RequestError as err:
            return {"error": {"status": err.status, "detail": err.detail}}


async def _forward(items: list[tuple[ServedModel, pa.Table]], scores: bool) -> list[np.ndarray]:
    """One forward per model among the batch's items (one model but during a swap), answers in item order."""
    out: list[np.ndarray | None] = [None] * len(items)
    groups: dict[int, tuple[ServedModel, list[int]]] = {}
    for i, (served, _) in enumerate(items):
        groups.setdefault(id(served), (served, []))[1].append(i)
    for served, index in groups.values():
        vectors = await asyncio.to_thread(served.forward, [items[i][1] for i in index], scores)
        for i, vector in zip(index, vectors):
            out[i] = vector[0]
    return out


@serve.deployment
class MethodModel(MethodLogic):
    """One method's models in a deployment of their own, multiplexed by registry entry (the model id)."""

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def get_model(self, entry: str) -> ServedModel:
        return await self._load(entry)

    async def _served(self, entry: str | None) -> ServedModel:
        return await self.get_model(entry or serve.get_multiplexed_model_id())


class LocalMethod(MethodLogic):
    """One method's models inside the ingress replica (``ServeArgs.placement="ingress"``): no second hop.

    Keeps the serving entry and the one it replaced, as :class:`MethodModel` does.
    """

    def __init__(self, method: str, args: dict):
        super().__init__(method, args)
        self._models: collections.OrderedDict[str, ServedModel] = collections.OrderedDict()
        self._loading = asyncio.Lock()

    async def _served(self, entry: str | None) -> ServedModel:
        if entry is None:
            raise ValueError("LocalMethod needs the entry to serve")
        if entry not in self._models:
            async with self._loading:  # one load at a time; a waiter finds it loaded
                if entry not in self._models:
                    self._models[entry] = await self._load(entry)
                    while len(self._models) > MODELS_PER_REPLICA:
                        self._models.popitem(last=False)
        self._models.move_to_end(entry)
        return self._models[entry]


def make_ingress(args: ServeArgs):
    """The FastAPI app and the ingress deployment class (built per app, so the limits travel with it)."""
    api = FastAPI(title="raylurm", version=__version__,
                  description="Universal user representations from the raylurm registry's best checkpoints: "
                              "embed users, find similar users, recommend next items. Bodies and limits: see the schemas.")

    @api.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if request.method == "POST" and size is not None:
            if not size.isdigit():
                return JSONResponse({"detail": f"bad Content-Length {size!r}"}, status_code=400)
            if int(size) > args.max_body_bytes:
                return JSONResponse({"detail": f"request body of {size} bytes is over max_body_bytes={args.max_body_bytes}"},
                                    status_code=413)
        return await call_next(request)

    api.add_exception_handler(RequestValidationError, validation_error)

    @serve.ingress(api)
    class Api:
        def __init__(self, models: dict[str, DeploymentHandle] | list[str], args: dict):
            """``models``: each method's deployment handle, or (placement "ingress") the methods to load here."""
            self.args = ServeArgs(**args)
            self.registry = Registry(self.args.registry)
            self.handles = models if isinstance(models, dict) else {}
            self.local = {} if isinstance(models, dict) else {m: LocalMethod(m, args) for m in models}
            self.methods = list(self.handles or self.local)  # in METHODS order
            self.serving = {m: self._current(m) for m in self.methods}
            self._checked, self._reloading, self._handles = time.monotonic(), asyncio.Lock(), {}

        def _current(self, method: str) -> str:
            entry = self.registry.current(method)
            if entry is None:
                raise FileNotFoundError(f"registry {self.registry.root}: {method} has no current entry")
            return entry.name

        # ----------------------------------------------------------------------- plumbing
        async def _remote(self, method: str, endpoint: str, *args, entry: str | None = None) -> dict:
            """``endpoint`` of ``method``'s models for ``entry`` (default: the served one), wherever they live."""
            if method not in self.serving:
                raise HTTPException(404, f"method {method!r} is not served; served: {sorted(self.methods)}")
            if self.local:
                return await getattr(self.local[method], endpoint)(*args, entry=entry or self.serving[method])
            handle = self._handle(method) if entry is None else self.handles[method].options(multiplexed_model_id=entry)
            return await getattr(handle, endpoint).remote(*args)

        def _handle(self, method: str) -> DeploymentHandle:
            key = (method, self.serving[method])
            if key not in self._handles:  # one handle per served entry (options() builds a new handle object)
                self._handles[key] = self.handles[method].options(multiplexed_model_id=key[1])
            return self._handles[key]

        def _limits(self, body) -> None:
            events = getattr(body, "events", None)
            if events is not None and len(events) > self.args.max_events:
                raise HTTPException(413, f"{len(events)} events are over max_events={self.args.max_events}")
            k = getattr(body, "k", None)
            if k is not None and k > self.args.max_k:
                raise HTTPException(422, f"k={k} is over max_k={self.args.max_k}")

        async def _call(self, endpoint: str, body) -> dict:
            self._limits(body)
            self._maybe_reload()
            out = await self._remote(body.method, endpoint, _plain(body))
            if "error" in out:
                raise HTTPException(out["error"]["status"], out["error"]["detail"])
            return out

        def _maybe_reload(self) -> None:
            interval = self.args.reload_interval_s
            if interval > 0 and time.monotonic() - self._checked > interval and not self._reloading.locked():
                self._checked = time.monotonic()
                self._reload_task = asyncio.get_running_loop().create_task(self._reload())  # keep a reference (asyncio)

        async def _reload(self) -> dict:
            async with self._reloading:
                changed = {}
                for method in self.methods:
                    try:
                        entry = await asyncio.to_thread(self._current, method)
                        if entry != self.serving[method]:
                            await self._remote(method, "describe", entry=entry)  # load it first
                            changed[method] = {"from": self.serving[method], "to": entry}
                            self.serving[method] = entry
                            log.info("%s: now serving %s (was %s)", method, entry, changed[method]["from"])
                    except Exception as err:  # a broken entry must not take the served one down
                        log.error("%s: keeping %s; the registry's current entry failed to load: %s", method, self.serving[method], err)
                        changed[method] = {"error": str(err)}
                self._checked = time.monotonic()
                return changed

        # ----------------------------------------------------------------------- endpoints
        @api.post("/v1/embed", response_model=EmbedResponse, response_model_exclude_none=True, tags=["v1"],
                  summary="A user's representation, from events, a served user_id, or a LURM state plus new events")
        async def embed(self, body: EmbedRequest) -> Response:
            return _json(EmbedResponse, await self._call("embed", body))

        @api.post("/v1/similar-users", response_model=SimilarResponse, tags=["v1"],
                  summary="Nearest served users (cosine, faiss) to a served user_id or to events")
        async def similar_users(self, body: SimilarRequest) -> Response:
            return _json(SimilarResponse, await self._call("similar", body))

        @api.post("/v1/recommend", response_model=RecommendResponse, tags=["v1"],
                  summary="Next items for a user's events (sequence methods: atrank, dss)")
        async def recommend(self, body: RecommendRequest) -> Response:
            return _json(RecommendResponse, await self._call("recommend", body))

        @api.get("/v1/models", tags=["v1"], summary="Which registry entry serves each method, with its metrics")
        async def models(self) -> dict:
            described = await asyncio.gather(*(self._remote(m, "describe") for m in self.methods))
            return {"models": list(described)}

        @api.post("/v1/reload", tags=["v1"], summary="Re-read the registry now; load and serve promoted entries")
        async def reload(self) -> dict:
            return {"changed": await self._reload(), "serving": dict(self.serving)}

        @api.get("/healthz", response_model=Health, tags=["health"])
        async def healthz(self) -> dict:
            return {"status": "ok", "methods": dict(self.serving)}

    return Api


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 answer, made JSON-safe: its default echoes the rejected input, and a NaN or
    infinity there (Python's json module writes ``NaN`` for float("nan")) failed to serialise into a 500."""
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


def _finite(value):
    """``value`` with every non-finite float replaced by its name ('nan', 'inf', '-inf')."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plain(body) -> dict:
    """A request model as plain dicts for the model replica (pydantic's model_dump costs ~2 ms per 150 events)."""
    out = dict(body.__dict__)
    if out.get("events") is not None:
        out["events"] = [dict(e.__dict__) for e in out["events"]]
    if out.get("state") is not None:
        out["state"] = out["state"].model_dump()
    return out


def _json(model, out: dict) -> Response:
    """Validate against the response model and serialise with pydantic's JSON encoder (a 2560-float
    embedding: 0.1 ms, against ~3 ms through FastAPI's generic encoder and json.dumps)."""
    return Response(model.model_validate(out).model_dump_json(exclude_none=True), media_type="application/json")


def app_builder(args: ServeArgs):
    """Typed application builder (``serve run serve/config.yaml``, ``python -m raylurm.serve``)."""
    registry = Registry(args.registry)
    args = args.model_copy(update={"registry": str(registry.root.resolve())})  # replicas may run elsewhere
    available = [m for m in METHODS if registry.current(m) is not None]
    methods = args.methods or available
    missing = [m for m in methods if m not in available]
    if missing or not methods:
        raise ValueError(f"registry {registry.root}: no current entry for {missing or list(METHODS)} "
                         f"(have: {available or 'none'}); run a sweep (python -m raylurm.tune) or promote an entry")
    logging = {"enable_access_log": args.access_log}
    if args.placement == "ingress":  # the models load in the ingress replicas, which take the models' resources
        ingress = serve.deployment(make_ingress(args), name="Api", num_replicas=args.num_replicas,
                                   ray_actor_options={"num_cpus": 0.1 + args.num_cpus * len(methods), "num_gpus": args.num_gpus},
                                   max_ongoing_requests=args.max_ongoing_requests, logging_config=logging)
        return ingress.bind(list(methods), args.model_dump())
    # Serve's default of 5 requests in flight per replica would cap a batch at 5 and, at higher
    # concurrency, leave requests in the proxy's retry back-off (measured: 8 req/s at 32 clients).
    options = {"num_replicas": args.num_replicas, "max_ongoing_requests": 2 * args.max_batch_size, "logging_config": logging,
               "ray_actor_options": {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus}}
    models = {m: MethodModel.options(name=m, **options).bind(m, args.model_dump()) for m in methods}
    ingress = serve.deployment(make_ingress(args), name="Api", ray_actor_options={"num_cpus": 0.1},
                               max_ongoing_requests=args.max_ongoing_requests, logging_config=logging)
    return ingress.bind(models, args.model_dump())


def deploy(app_args: ServeArgs, host: str = "127.0.0.1", port: int = 8000, name: str = "raylurm"):
    """Deploy the application on the running Ray, Serve's HTTP proxy on ``host:port``; return its handle."""
    serve.start(http_options={"host": host, "port": port})
    return serve.run(app_builder(app_args), name=name, route_prefix="/")
