"""Interest vocabulary: faiss spherical k-means, hard/soft assignment, content hash."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from raylurm.boi.vocabulary import TooManyInterests, Vocabulary, VocabularyConfig, build_vocabulary, default_num_interests


def _clustered(n_per: int = 40, centers: int = 5, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centers, dim))
    x = np.repeat(means, n_per, axis=0) + 0.05 * rng.normal(size=(centers * n_per, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return pa.array(np.arange(len(x))), x.astype(np.float32), np.repeat(np.arange(centers), n_per)


def test_default_size_scales_with_the_catalogue():
    assert default_num_interests(3_706) == 370
    assert default_num_interests(50) == 8
    assert default_num_interests(5_000_000) == 100_000


def test_hard_assignment_recovers_clear_clusters():
    ids, x, truth = _clustered()
    vocab = build_vocabulary(ids, x, VocabularyConfig(num_interests=5, restarts=10))
    assigned = np.array([v[0] for v in vocab.interest_ids.to_pylist()])
    for c in range(5):  # every true cluster maps to exactly one interest, and interests are distinct
        assert len(set(assigned[truth == c])) == 1
    assert len(set(assigned)) == 5
    assert all(w == [1.0] for w in vocab.interest_weights.to_pylist())
    np.testing.assert_allclose(np.linalg.norm(vocab.centroids, axis=1), 1.0, atol=1e-5)  # spherical


def test_soft_assignment_top_k_weights():
    ids, x, _ = _clustered()
    vocab = build_vocabulary(ids, x, VocabularyConfig(num_interests=5, assignment="soft", top_k=3, soft_temperature=0.1))
    weights = np.array(vocab.interest_weights.to_pylist())
    chosen = np.array(vocab.interest_ids.to_pylist())
    assert weights.shape == (len(x), 3) and np.allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(np.diff(weights, axis=1) <= 1e-7), "weights sorted by similarity"
    sims = np.take_along_axis(x @ vocab.centroids.T, chosen, axis=1)
    expected = np.exp(sims / 0.1) / np.exp(sims / 0.1).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(weights, expected, atol=1e-4)
    hard = build_vocabulary(ids, x, VocabularyConfig(num_interests=5))
    assert [v[0] for v in vocab.interest_ids.to_pylist()] == [v[0] for v in hard.interest_ids.to_pylist()]


def test_items_without_embedding_get_no_interest():
    ids, x, _ = _clustered()
    x[:3] = 0
    vocab = build_vocabulary(ids, x, VocabularyConfig(num_interests=5))
    assert vocab.interest_ids.to_pylist()[:3] == [[], [], []] and all(len(v) == 1 for v in vocab.interest_ids.to_pylist()[3:])
    assert vocab.config["items_without_embedding"] == 3


def test_one_interest_per_item():
    """num_interests="items": no clustering, each item with an embedding is its own interest (duplicates too)."""
    ids, x, _ = _clustered(n_per=4)
    x[1] = x[0]  # identical vectors stay two interests
    x[5] = 0  # no embedding: no interest
    vocab = build_vocabulary(ids, x, VocabularyConfig(num_interests="items"))
    assigned = vocab.interest_ids.to_pylist()
    assert vocab.num_interests == len(x) - 1 and assigned[5] == []
    assert [a[0] for a in assigned if a] == list(range(len(x) - 1))
    np.testing.assert_array_equal(vocab.centroids, np.delete(x, 5, axis=0))
    soft = build_vocabulary(ids, x, VocabularyConfig(num_interests="items", assignment="soft", top_k=2))
    assert all(len(a) == 2 for i, a in enumerate(soft.interest_ids.to_pylist()) if i != 5)


def test_save_load_and_hash(tmp_path):
    ids, x, _ = _clustered()
    vocab = build_vocabulary(ids, x, VocabularyConfig(num_interests=5, seed=1))
    vocab.save(tmp_path / "v")
    again = Vocabulary.load(tmp_path / "v")
    assert again.content_hash == vocab.content_hash == json.loads((tmp_path / "v" / "config.json").read_text())["hash"]
    assert again.interest_ids.equals(vocab.interest_ids) and np.array_equal(again.centroids, vocab.centroids)
    same = build_vocabulary(ids, x, VocabularyConfig(num_interests=5, seed=1))
    assert same.content_hash == vocab.content_hash, "deterministic for a seed"
    np.save(tmp_path / "v" / "centroids.npy", vocab.centroids + 1e-3)
    with pytest.raises(ValueError, match="hash"):
        Vocabulary.load(tmp_path / "v")


def test_bad_config_and_too_few_items():
    with pytest.raises(ValueError, match="assignment"):
        VocabularyConfig(assignment="fuzzy")
    ids, x, _ = _clustered(n_per=1)
    with pytest.raises(TooManyInterests, match="num-interests items"):
        build_vocabulary(ids, x, VocabularyConfig(num_interests=50))
    with pytest.raises(ValueError, match="num_interests"):
        VocabularyConfig(num_interests="all")
