"""Typed arguments of the Serve application and the HTTP API's request/response bodies (v1)."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from raylurm.data.schema import MAX_TIMESTAMP


class ServeArgs(BaseModel):
    """Arguments of :func:`raylurm.serving.app.app_builder` (``args:`` in ``serve/config.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    registry: Optional[str] = Field(None, description="registry root (default $RAYLURM_REGISTRY or $RAYLURM_HOME/registry)")
    methods: Optional[list[str]] = Field(None, description="methods to serve (default: every method with a current entry)")
    users: Optional[str] = Field(None, description="BoI users directory indexed for similar-users and user_id lookups "
                                                   "(default: the rows each entry was pretrained on)")
    placement: Literal["deployments", "ingress"] = Field("deployments", description=(
        "'deployments': one model deployment per method behind the ingress (own replicas, batch queue, CPU/GPU share); "
        "'ingress': the models load inside the ingress replica (no second hop: lower latency for small models)"))
    device: str = Field("auto", description="'auto' (CUDA when a replica has a GPU), 'cpu', 'cuda'")
    num_cpus: float = Field(0.25, ge=0, description="logical CPUs reserved per model replica (placement 'ingress': "
                                                    "per method, added to the ingress replica)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per model replica (e.g. 0.25 shares one GPU by four methods); "
                                                   "with placement 'ingress', of the ingress replica that holds them all")
    num_replicas: int = Field(1, ge=1, description="replicas per method")
    max_batch_size: int = Field(32, ge=1, description="requests batched into one forward (@serve.batch)")
    max_ongoing_requests: int = Field(256, ge=1, description="requests in flight per ingress replica (a model replica "
                                                             "takes 2 x max_batch_size: one batch running, one filling)")
    access_log: bool = Field(True, description="Serve's per-request access log lines")
    batch_wait_timeout_s: float = Field(0.001, ge=0, description="longest wait to fill a batch (under load batches fill "
                                                                   "while the previous one runs)")
    max_events: int = Field(10_000, ge=1, description="events per request; more -> 413")
    max_k: int = Field(1_000, ge=1, description="largest k of similar-users and recommend; more -> 422")
    max_body_bytes: int = Field(4_000_000, ge=1_000, description="request body size; more -> 413")
    reload_interval_s: float = Field(10.0, ge=0, description="the registry is checked for promoted entries as requests "
                                                             "arrive, at most this often (0: only on POST /v1/reload)")
    index_factory: str = Field("Flat", description="faiss index_factory string of the served-user index "
                                                   "(inner product on unit vectors)")


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: Union[StrictInt, StrictStr] = Field(description="an item id of the model's catalogue")
    timestamp: int = Field(ge=0, le=MAX_TIMESTAMP, description="UTC seconds")
    behavior: Optional[str] = Field(None, description="behaviour type (may be left out when the model knows only one)")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field(description="lurm, atrank, dss or adaptssr (see GET /v1/models)")


class _User(_Request):
    events: Optional[list[Event]] = Field(None, description="the user's events (any order)")
    user_id: Optional[Union[StrictInt, StrictStr]] = Field(None, description="a served user (instead of events)")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.events is None) == (self.user_id is None):
            raise ValueError("give exactly one of 'events' and 'user_id'")
        if self.events is not None and not self.events:
            raise ValueError("'events' is empty: send at least one event")
        return self


class StateScale(BaseModel):
    """One scale of a LURM state, as ``/v1/embed`` returned it (``raylurm.serving.incremental.to_json``)."""

    model_config = ConfigDict(extra="forbid")

    period: Optional[StrictInt] = Field(description="the open period (months or years since 1970); null before any event")
    closed: StrictStr = Field(description="the GRU state after the closed periods: base64 of M·H little-endian float32")
    open_ids: list[StrictInt] = Field(description="interest ids counted so far in the open period")
    open_counts: list[float] = Field(description="their event counts")


class LURMState(BaseModel):
    """What ``/v1/embed`` returns with ``return_state``: send it back unchanged with the new events."""

    model_config = ConfigDict(extra="forbid")

    entry: StrictStr = Field(description="the registry entry that made the state")
    scales: dict[str, StateScale] = Field(description="one state per scale of the model (month, year)")


class EmbedRequest(_User):
    return_state: bool = Field(False, description="LURM: also return the GRU state for incremental updates")
    # typed, so a malformed state is a 422 naming its field (a free dict reached the replica and got 409 "made by None")
    state: Optional[LURMState] = Field(None, description="LURM: a state returned earlier; 'events' are then only "
                                                         "the new events (at or after the state's last period)")

    @model_validator(mode="after")
    def _state_needs_events(self):
        if self.state is not None and self.events is None:
            raise ValueError("'state' needs the new 'events' to fold in")
        return self


class SimilarRequest(_User):
    k: int = Field(10, ge=1, description="how many users")


class RecommendRequest(_Request):
    events: list[Event] = Field(min_length=1, description="the user's events")
    k: int = Field(10, ge=1, description="how many items")
    exclude_seen: bool = Field(True, description="leave out the request's own items")


class EmbedResponse(BaseModel):
    method: str
    entry: str
    dim: int
    embedding: list[float]
    unknown_items: list[Union[int, str]] = Field(description="request items without an interest (skipped)")
    state: Optional[dict[str, Any]] = None


class SimilarUser(BaseModel):
    user_id: Union[int, str]
    score: float = Field(description="cosine similarity")


class SimilarResponse(BaseModel):
    method: str
    entry: str
    users: list[SimilarUser]
    unknown_items: list[Union[int, str]] = []


class RecommendedItem(BaseModel):
    item_id: Union[int, str]
    score: float


class RecommendResponse(BaseModel):
    method: str
    entry: str
    items: list[RecommendedItem]
    unknown_items: list[Union[int, str]] = []


class Health(BaseModel):
    status: Literal["ok"]
    methods: dict[str, str] = Field(description="method -> serving entry")
