"""Tests of the LURM §3.1.1 item embeddings (raylurm.boi.embeddings)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raylurm.boi.embeddings import ItemEmbeddingConfig, ItemEmbeddings, train_item_embeddings
from raylurm.boi.embeddings.pairs import EventLog, draw_pairs, load_events, window_bounds
from raylurm.boi.embeddings.text import EMPTY, UNK, TextItemEncoder, accidental_hits, encode_texts, split_words
from raylurm.data.errors import DataError
from raylurm.data.synth import SynthConfig, generate

DAY = 86_400
# Peaky users over few topics, so β-window pairs mostly share a topic; small enough for seconds.
SYNTH = SynthConfig(users=300, years=2, items=300, num_topics=10, num_categories=5, concentration=0.05,
                    events_per_user_month=6, seed=1)
TEXT = ItemEmbeddingConfig(method="text", dim=32, pairs_per_epoch=8000, batch_size=256, epochs=3)
COOC = ItemEmbeddingConfig(method="cooccurrence", dim=16, pairs_per_epoch=20000)
TINY = {"text": dataclasses.replace(TEXT, pairs_per_epoch=600, epochs=1), "cooccurrence": COOC}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    generate(SYNTH, out, progress=False)
    return out


@pytest.fixture(scope="module")
def trained(synth_dir: Path) -> dict[str, ItemEmbeddings]:
    return {c.method: train_item_embeddings(synth_dir, c, progress=False) for c in (TEXT, COOC)}


def _tiny_dataset(root: Path, texts: list[str | None] | None = None) -> Path:
    """Items 0..5 (item 5 never in the events); two users with a few close events."""
    root.mkdir(parents=True)
    items = {"item_id": pa.array(range(6), pa.int64())}
    if texts is not None:
        items["text"] = pa.array(texts, pa.string())
    pq.write_table(pa.table(items), root / "items.parquet")
    (root / "events").mkdir()
    events = {"user_id": [1, 1, 1, 1, 2, 2, 2], "item_id": [0, 1, 0, 2, 3, 4, 3],
              "timestamp": [0, 3600, 7200, 40 * DAY, 0, 60, 120], "behavior": ["click"] * 7}
    pq.write_table(pa.table(events), root / "events" / "part-00000.parquet")
    return root


def _topic_cosines(vectors: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cosine over pairs of distinct items with the same label, and with different labels."""
    keep = np.abs(vectors).sum(axis=1) > 0  # zero vectors (no co-occurrence) carry no direction
    v, labels = vectors[keep], labels[keep]
    sim = v @ v.T
    same, other = labels[:, None] == labels[None, :], ~np.eye(len(v), dtype=bool)
    return float(sim[same & other].mean()), float(sim[~same].mean())


# ----------------------------------------------------------------------------- text encoder (eq. 1)


def test_split_words_matches_python_word_regex() -> None:
    texts = ["Hello, World! Café_2 naïve", None, "", "  x  ", "日本語 テキスト", "Children's|Comedy (1995)"]
    words, owner = split_words(pa.array(texts), max_words=100)
    got = [[w for w, o in zip(words.to_pylist(), owner) if o == i] for i in range(len(texts))]
    assert got == [re.findall(r"\w+", (t or "").lower()) for t in texts]
    words, owner = split_words(pa.array(["a b c d", "e f"]), max_words=3)
    assert words.to_pylist() == ["a", "b", "c", "e", "f"] and owner.tolist() == [0, 0, 0, 1, 1]


def test_encode_texts_maps_unknown_and_empty() -> None:
    vocabulary = [UNK, EMPTY, "apple", "red", "green"]
    bags = encode_texts(pa.array(["Red apple!", "green GREEN apple", None, "purple", ""]), vocabulary, max_words=32)
    items = [bags.ids[a:b].tolist() for a, b in zip(bags.offsets[:-1], bags.offsets[1:])]
    assert items == [[3, 2], [4, 4, 2], [1], [0], [1]]
    ids, offsets = bags.take(np.array([4, 1, 0]))
    assert ids.tolist() == [1, 4, 4, 2, 3, 2] and offsets.tolist() == [0, 1, 4]
    truncated = encode_texts(pa.array(["green green apple"]), vocabulary, max_words=2)
    assert truncated.ids.tolist() == [4, 4]


def _reference_encoder(model: TextItemEncoder, items: list[list[int]]) -> torch.Tensor:
    """Eq. 1 by hand: mean word vector, two pre-norm residual blocks, L2 normalisation."""
    out = []
    for ids in items:
        x = model.words.weight[ids].mean(dim=0)  # (D,)
        for block in model.proj:
            h = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + block.norm.eps)
            h = h * block.norm.weight + block.norm.bias
            h = torch.relu(block.fc1.weight @ h + block.fc1.bias)
            x = x + block.fc2.weight @ h + block.fc2.bias
        out.append(x / x.norm())
    return torch.stack(out)


def test_encoder_matches_naive_reference() -> None:
    torch.manual_seed(0)
    model = TextItemEncoder(vocab_size=5, dim=6).double()
    for p in model.parameters():
        torch.nn.init.normal_(p)  # also the LayerNorm gains and biases
    bags = encode_texts(pa.array(["red apple", "green green apple", None, "purple"]),
                        [UNK, EMPTY, "apple", "red", "green"], max_words=32)
    ids, offsets = bags.take(np.arange(4))
    expected = _reference_encoder(model, [[3, 2], [4, 4, 2], [1], [0]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids, offsets), expected)
    torch.testing.assert_close(model(ids, offsets).norm(dim=1), torch.ones(4, dtype=torch.float64))


# ----------------------------------------------------------------------------- positive pairs


def _hand_log() -> EventLog:
    # user 0: Δt = 99 is inside a 100 s window, Δt = 100 is not; user 1: close events on one item only.
    return EventLog.from_events(
        user=np.array([0, 0, 0, 0, 0, 1, 1, 1, 2]),
        time=np.array([0, 50, 99, 100, 250, 0, 10, 500, 60]),
        item=np.array([0, 1, 2, 0, 3, 4, 4, 5, 1]),
    )


def _candidates(log: EventLog, window: float) -> set[tuple[int, int]]:
    n = log.user.size
    return {(a, b) for a in range(n) for b in range(n) if a != b and log.user[a] == log.user[b]
            and abs(log.time[a] - log.time[b]) < window and log.item[a] != log.item[b]}


def test_window_bounds_equal_brute_force() -> None:
    log = _hand_log()
    lo, hi = window_bounds(log, 100.0)
    for e in range(log.user.size):
        inside = [f for f in range(log.user.size)
                  if log.user[f] == log.user[e] and abs(log.time[f] - log.time[e]) < 100]
        assert list(range(lo[e], hi[e])) == inside


def test_pairs_cover_exactly_the_candidate_partners() -> None:
    log = _hand_log()
    anchors, partners = draw_pairs(log, window_bounds(log, 100.0), 4000, np.random.default_rng(0))
    assert anchors.size == 4000
    drawn = set(zip(anchors.tolist(), partners.tolist()))
    assert drawn == _candidates(log, 100.0)  # every candidate drawn, nothing else
    assert (0, 3) not in drawn and (1, 4) not in drawn  # Δt = 100, Δt = 200


def test_pairs_on_synth_are_same_user_within_window(synth_dir: Path) -> None:
    items = pq.read_table(synth_dir / "items.parquet")["item_id"].combine_chunks()
    log = load_events(synth_dir, items, 10**9, np.random.default_rng(0))
    assert np.all(np.diff(log.user) >= 0) and np.all((np.diff(log.time) >= 0) | (np.diff(log.user) > 0))
    anchors, partners = draw_pairs(log, window_bounds(log, 5 * DAY), 5000, np.random.default_rng(1))
    assert np.array_equal(log.user[anchors], log.user[partners])
    assert np.all(np.abs(log.time[anchors] - log.time[partners]) < 5 * DAY)
    assert np.all(log.item[anchors] != log.item[partners])


def test_no_pairs_is_a_data_error() -> None:
    log = EventLog.from_events(np.array([0, 1]), np.array([0, 0]), np.array([0, 1]))
    with pytest.raises(DataError, match="no positive pairs"):
        draw_pairs(log, window_bounds(log, 10.0), 10, np.random.default_rng(0))


def _histories(log: EventLog) -> list[tuple]:
    """Each user's (time, item) sequence."""
    starts = np.flatnonzero(np.r_[True, np.diff(log.user) != 0])
    ends = np.r_[starts[1:], log.user.size]
    return [tuple(zip(log.time[a:b].tolist(), log.item[a:b].tolist())) for a, b in zip(starts, ends)]


def test_max_events_keeps_whole_users(synth_dir: Path) -> None:
    items = pq.read_table(synth_dir / "items.parquet")["item_id"].combine_chunks()
    full = load_events(synth_dir, items, 10**9, np.random.default_rng(0))
    sample = load_events(synth_dir, items, 3000, np.random.default_rng(0))
    assert 0 < sample.user.size <= 3000 < full.user.size
    assert set(_histories(sample)) <= set(_histories(full))  # no user is cut


def test_accidental_hits_mask_copies_of_anchor_and_partner() -> None:
    rows, partners = np.array([7, 8, 8, 9]), np.array([8, 7, 9, 8])
    mask = accidental_hits(rows, partners)
    assert mask.tolist() == [[True, True, True, False], [True, True, True, False],
                             [False, True, True, True], [False, True, True, True]]


# ----------------------------------------------------------------------------- training


def test_text_training_reduces_the_loss(trained: dict[str, ItemEmbeddings]) -> None:
    losses = trained["text"].config["metrics"]["loss_per_epoch"]
    assert len(losses) == TEXT.epochs and all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.2


@pytest.mark.parametrize("method,margin", [("text", 0.05), ("cooccurrence", 0.3)])
def test_items_of_one_topic_end_up_closer(synth_dir: Path, trained: dict[str, ItemEmbeddings], method: str,
                                          margin: float) -> None:
    items = pq.read_table(synth_dir / "items.parquet")
    result = trained[method]
    assert result.item_ids.equals(items["item_id"].combine_chunks())
    assert result.vectors.shape == (items.num_rows, result.config["dim"]) and result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    within, across = _topic_cosines(result.vectors, items["topic"].to_numpy())
    assert within > across + margin, (within, across)


def test_text_embeds_items_without_text_or_events(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _tiny_dataset(tmp_path / "d", ["red apple", "green apple", None, "red car", "blue car", "unused"])
    result = train_item_embeddings(data, dataclasses.replace(TINY["text"], dim=8, batch_size=16), progress=False)
    assert result.vectors.shape == (6, 8)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert "1 of 6 item(s) have no text" in caplog.text


def test_cooccurrence_zero_vectors_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _tiny_dataset(tmp_path / "d")  # no text column at all: fine for co-occurrence
    result = train_item_embeddings(data, dataclasses.replace(COOC, dim=4), progress=False)
    norms = np.linalg.norm(result.vectors, axis=1)
    assert norms[5] == 0 and norms[2] == 0  # 5: never seen; 2: alone in its window
    np.testing.assert_allclose(norms[[0, 1, 3, 4]], 1.0, atol=1e-5)
    assert result.config["metrics"]["items_without_cooccurrence"] == 2
    assert "2 of 6 item(s) have no co-occurrence" in caplog.text


@pytest.mark.parametrize("method", ["text", "cooccurrence"])
def test_same_seed_gives_identical_vectors(synth_dir: Path, method: str) -> None:
    first, second = (train_item_embeddings(synth_dir, TINY[method], progress=False) for _ in range(2))
    np.testing.assert_array_equal(first.vectors, second.vectors)
    assert first.content_hash() == second.content_hash()
    other = train_item_embeddings(synth_dir, dataclasses.replace(TINY[method], seed=1), progress=False)
    assert not np.array_equal(first.vectors, other.vectors)


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("method", ["text", "cooccurrence"])
def test_save_load_round_trip(tmp_path: Path, synth_dir: Path, trained: dict[str, ItemEmbeddings],
                              method: str) -> None:
    result = trained[method]
    result.save(tmp_path / "emb")
    result.save(tmp_path / "emb")  # replacing an existing directory
    loaded = ItemEmbeddings.load(tmp_path / "emb")
    np.testing.assert_array_equal(loaded.vectors, result.vectors)
    assert loaded.item_ids.equals(result.item_ids) and loaded.item_ids.type == result.item_ids.type
    assert loaded.config == result.config and loaded.content_hash() == result.content_hash()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]  # no temporary leftovers
    expected = {"items.parquet", "embeddings.npy", "config.json"}
    expected |= {"model.pt", "words.json"} if method == "text" else set()
    assert {p.name for p in (tmp_path / "emb").iterdir()} == expected
    if method == "text":
        texts = pq.read_table(synth_dir / "items.parquet")["text"].to_pylist()
        np.testing.assert_allclose(loaded.embed_texts(texts), result.vectors, atol=1e-6)


def test_failed_save_leaves_the_old_directory(tmp_path: Path, trained: dict[str, ItemEmbeddings],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    trained["cooccurrence"].save(tmp_path / "emb")
    before = {p.name: p.read_bytes() for p in (tmp_path / "emb").iterdir()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        trained["text"].save(tmp_path / "emb")
    assert {p.name: p.read_bytes() for p in (tmp_path / "emb").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]


def test_content_hash_depends_on_vectors_ids_and_config(trained: dict[str, ItemEmbeddings]) -> None:
    base = trained["cooccurrence"]
    vectors = base.vectors.copy()
    vectors[0, 0] += 1e-3
    changed = [
        dataclasses.replace(base, vectors=vectors),
        dataclasses.replace(base, item_ids=pa.array(range(1, len(base.item_ids) + 1), pa.int64())),
        dataclasses.replace(base, config={**base.config, "seed": 99}),
    ]
    assert len({base.content_hash(), *(c.content_hash() for c in changed)}) == 4


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("changes", [
    {"method": "word2vec"}, {"dim": 0}, {"dim": 1.5}, {"temperature": 0.0}, {"window_days": -1.0},
    {"epochs": 0}, {"batch_size": 1}, {"lr": float("nan")}, {"max_words": 0}, {"min_word_count": 0},
    {"pairs_per_epoch": True}, {"max_events": -5}, {"seed": -1}, {"temperature": "0.1"},
])
def test_bad_config_raises_value_error(changes: dict) -> None:
    with pytest.raises(ValueError):
        ItemEmbeddingConfig(**changes)


def test_missing_items_table_is_a_data_error(tmp_path: Path) -> None:
    data = _tiny_dataset(tmp_path / "d", ["a"] * 6)
    (data / "items.parquet").unlink()
    with pytest.raises(DataError, match="no items table"):
        train_item_embeddings(data, TINY["text"], progress=False)


def test_text_method_without_text_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cooccurrence"):
        train_item_embeddings(_tiny_dataset(tmp_path / "d"), TINY["text"], progress=False)
