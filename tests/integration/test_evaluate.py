"""The evaluation harness end to end on real Ray: split -> pretraining on it -> evaluation CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from raylurm.boi.build import BuildConfig
from raylurm.boi.embeddings import ItemEmbeddingConfig
from raylurm.boi.pipeline import BoiConfig
from raylurm.boi.vocabulary import VocabularyConfig
from raylurm.data.synth import SynthConfig, generate
from raylurm.evaluate.__main__ import main as evaluate_main
from raylurm.evaluate.split import SplitConfig, materialise
from raylurm.train.config import TrainConfig
from raylurm.train.fit import fit

pytestmark = pytest.mark.integration

SPLIT = SplitConfig(cutoff_quantile=0.8)


@pytest.fixture(scope="module")
def setting(ray_runtime, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    generate(SynthConfig(users=160, years=2, items=200, num_topics=6, num_categories=4, seed=11), root / "data", progress=False)
    build = BuildConfig(embedding=ItemEmbeddingConfig(method="cooccurrence", dim=16), vocabulary=VocabularyConfig(num_interests=20),
                        boi=BoiConfig(on_unknown_items="skip"))
    split = materialise(root / "data", SPLIT, build_config=build)  # the default place, where the CLI finds it
    checkpoints = {}
    for method, split_id in (("lurm", split.id), ("atrank", split.id), ("dss", None)):
        boi = split.boi("pretrain")
        result = fit(boi, TrainConfig(method=method, epochs=2, num_workers=2, batch_size=16, max_steps_per_epoch=3),
                     overrides=["hidden_dim=16"] if method == "lurm" else [], name=f"{method}-{split_id}",
                     storage_path=str(root / "runs"), split=split_id)
        assert result.error is None
        checkpoints[method] = Path(result.checkpoint.path)
    return root, split, checkpoints


def test_split_parts_hold_no_held_out_event(setting):
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    _, split, _ = setting
    every = pads.dataset(split.source / "events").to_table(columns=["user_id"]).to_pandas().user_id.value_counts()
    pretrain = pads.dataset(split.dataset("pretrain") / "events").to_table().to_pandas()
    targets = pq.read_table(split.targets).to_pandas().set_index("user_id")
    # every event but each user's last two, as the anchors train on (events after the category cutoff included)
    assert (pretrain.user_id.value_counts().reindex(targets.index) == every.reindex(targets.index) - 2).all()
    assert pretrain.timestamp.max() >= split.cutoff
    last = pretrain.groupby("user_id").timestamp.max().reindex(targets.index)
    assert (last <= targets.valid_time).all() and (targets.valid_time <= targets.test_time).all()
    boi = pads.dataset(split.boi("pretrain") / "users").to_table(columns=["user_id", "timestamps"]).to_pandas().set_index("user_id")
    boi_last = boi.timestamps.map(max).reindex(targets.index)
    assert (boi_last <= targets.valid_time).all(), "the BoI that pretraining reads holds no held-out event either"
    assert json.loads((split.boi("history") / "manifest.json").read_text())["vocabulary_hash"] == split.meta["vocabulary_hash"]


def test_categories_survive_the_split_rename(setting):
    """The split is built in a temp dir and renamed: ATRank must still see the items' categories."""
    import pyarrow.parquet as pq

    from raylurm.train.batch import DataInfo

    _, split, _ = setting
    info = DataInfo.from_boi(split.boi("pretrain"))
    firsts = {c[0] for c in pq.read_table(split.dataset("pretrain") / "items.parquet", columns=["category"])["category"].to_pylist() if c}
    assert len(firsts) >= 2 and info.num_categories == len(firsts) + 1, "every first category + 'none'"
    assert len(set(info.item_category) - {0}) == len(firsts)


def test_cli_evaluates_split_checkpoints_with_baselines(setting, capsys):
    import pandas as pd
    import pyarrow.parquet as pq

    root, split, checkpoints = setting
    out = root / "report"
    # no --data: the dataset (and split) come from the checkpoint
    code = evaluate_main(["--checkpoint", str(checkpoints["lurm"]), "--checkpoint", str(checkpoints["atrank"].parent), "--seeds", "2",
                          "--storage-path", str(root / "runs"), "--out", str(out), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "### User profiling" in printed and "| lurm |" in printed and "| popularity |" in printed and "| majority |" in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    models = {r["model"] for r in rows}
    assert models == {"lurm", "atrank", "atrank (head)", "lurm (random init)", "atrank (random init)", "atrank (random init) (head)",
                      "majority", "raw BoI", "TF-IDF", "popularity"}
    tasks = {(r["task"], r["target"]) for r in rows}
    assert {("profiling", "gender"), ("profiling", "age_bucket"), ("category", "mean"), ("next_item", "full"),
            ("next_item", "sampled")} <= tasks
    for r in rows:
        assert r["seeds"] == ("1" if r["task"] == "next_item" else "2"), r  # next item: every user once per next-item seed
        value = float(r["mean"])
        if r["metric"] not in ("pop pct@10", "MAE", "R²", "Spearman"):
            assert math.isnan(value) or 0.0 <= value <= 1.0, r
    by = {(r["task"], r["target"], r["model"], r["metric"]): float(r["mean"]) for r in rows}
    # synthetic labels depend on interests: the raw-BoI probe must find that signal
    assert by[("profiling", "gender", "raw BoI", "AUC")] > 0.6
    assert by[("profiling", "gender", "majority", "AUC")] == 0.5
    # pretraining changed the encoder: its representation is not its random-init twin's
    assert any(by[k] != by[(k[0], k[1], "lurm (random init)", k[3])] for k in by if k[2] == "lurm")
    for image in ("profiling.png", "category.png", "next_item_full.png", "next_item_sampled.png", "pretraining_curves.png"):
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
    # per-user results: next item scores every user with >= 3 events, own scorer and head alike, on the same users
    per_user = pd.read_parquet(out / "results_by_user.parquet")
    targets = pq.read_table(split.targets).to_pandas()
    full = per_user[(per_user.task == "next_item") & (per_user.target == "full")]
    for model in ("atrank", "atrank (head)", "lurm", "popularity"):
        assert sorted(full[full.model == model].user_id) == sorted(map(str, targets.user_id)), model
    assert (full["rank"] >= 0).all()
    test_users = set(per_user[(per_user.task == "profiling")].user_id)
    from raylurm.evaluate.cohorts import selection_mask

    assert not any(selection_mask(sorted(test_users), 0.2)), "a selection user was a profiling test user"
    md = (out / "RESULTS.md").read_text()
    assert f"split `{split.id}`" in md and "mean ± std over seeds [0, 1]" in md and "95 %" in md


def test_resume_reads_stored_subjects_back_and_carries_the_others(setting, capsys):
    """A later sitting evaluates only lurm with --resume: lurm and the baselines are read back from the
    first evaluation's store, atrank (not named) is carried, and the tables are the first evaluation's."""
    import pandas as pd

    root, _, checkpoints = setting
    first = root / "report"
    assert len(list((first / "subjects").glob("*/entry.json"))) == 8, "one stored entry per subject of the first evaluation"
    before = pd.read_csv(first / "results.csv")
    code = evaluate_main(["--checkpoint", str(checkpoints["lurm"]), "--seeds", "2", "--storage-path", str(root / "runs"),
                          "--out", str(first), "--resume", "-q"])
    assert code == 0
    capsys.readouterr()
    after = pd.read_csv(first / "results.csv")
    key = ["task", "target", "model", "metric"]
    pd.testing.assert_frame_equal(before.sort_values(key).reset_index(drop=True), after.sort_values(key).reset_index(drop=True))
    md = (first / "RESULTS.md").read_text()
    assert "Rows from earlier evaluations" in md and "read back: lurm, lurm (random init), majority" in md
    assert "carried (not evaluated by this command): atrank, atrank (random init) at commit" in md
    assert "(carried from commit" in md, "the carried atrank run keeps its row in the training table"


def test_cli_refuses_a_checkpoint_pretrained_on_all_events(setting, capsys):
    root, _, checkpoints = setting
    code = evaluate_main(["--checkpoint", str(checkpoints["dss"]), "--data", str(root / "data"),
                          "--cutoff-quantile", str(SPLIT.cutoff_quantile), "--storage-path", str(root / "runs"),
                          "--out", str(root / "refused"), "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "refusing" in err and "all events (no --split)" in err and "--split" in err
    assert not (root / "refused").exists(), "nothing written for a refused evaluation"


def test_random_init_is_the_runs_starting_point(setting):
    """The random-init baseline rebuilds the exact initial weights of the pretraining run."""
    import torch

    from raylurm.train.checkpoint import build_model, load_model, read_meta
    from raylurm.train.loop import init_seed

    _, _, checkpoints = setting
    meta = read_meta(checkpoints["atrank"])
    torch.manual_seed(init_seed(meta["train"]["seed"]))
    first = build_model(meta).state_dict()
    torch.manual_seed(init_seed(meta["train"]["seed"]))
    again = build_model(meta).state_dict()
    trained, _ = load_model(checkpoints["atrank"])
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], trained.state_dict()[k]) for k in first)
    assert np.isfinite(sum(float(v.float().sum()) for v in first.values()))


def test_pretrain_cli_split_option_records_the_split(setting):
    from raylurm.evaluate.harness import latest_per_method
    from raylurm.pretrain.__main__ import main as pretrain_main
    from raylurm.train.checkpoint import best_in_run, read_meta

    root, split, checkpoints = setting
    code = pretrain_main(["--split", "--data", str(root / "data"), "--cutoff-quantile", str(SPLIT.cutoff_quantile),
                          "--method", "adaptssr", "--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2",
                          "--storage-path", str(root / "runs"), "--name", "cli-split", "-q"])
    assert code == 0
    found = latest_per_method(root / "runs", split)
    assert set(found) == {"lurm", "atrank", "adaptssr"}, "the unsplit dss run is not a candidate"
    assert read_meta(found["adaptssr"])["split"] == split.id
    # the fixture's lurm run, as its result: the best validation epoch (the fixture holds the run's latest checkpoint;
    # with 2 short epochs either can be the best)
    assert found["lurm"].parent == checkpoints["lurm"].parent and found["lurm"] == best_in_run(checkpoints["lurm"].parent, split.id)


def test_vocabulary_variants_are_built_on_the_split_and_scored_on_selection_users(setting):
    """python -m raylurm.evaluate.vocabularies: each (embeddings, D) variant's BoI of the pretraining part, built once
    (the embeddings shared by the D values of one method), and its raw BoI val_auc on the selection users."""
    from raylurm.evaluate.vocabularies import Variant, compare, markdown

    _, split, _ = setting
    variants = [Variant("cooccurrence", 8), Variant("cooccurrence", 20), Variant("cooccurrence", "items"),
                Variant("cooccurrence", 10**6)]  # more interests than items: reported and skipped, the others still count
    rows = compare(split, variants)
    with_embedding = json.loads((split.root / "variants" / "cooccurrence-items" / "boi" / "pretrain" / "vocabulary"
                                 / "config.json").read_text())
    per_item = with_embedding["num_items"] - with_embedding["items_without_embedding"]
    assert [r["num_interests"] for r in rows] == [8, 20, per_item]
    assert all(0.0 <= r["val_auc"] <= 1.0 and "val_auc/gender" in r for r in rows)
    assert len({r["vocabulary_hash"] for r in rows}) == 3
    again = compare(split, variants[:1])  # built once: read back
    assert again[0]["vocabulary_hash"] == rows[0]["vocabulary_hash"] and again[0]["build_seconds"] < rows[0]["build_seconds"]
    assert "| cooccurrence | 20 |" in markdown(rows) and f"| cooccurrence | {per_item:,} (one per item) |" in markdown(rows)


def test_a_newly_chosen_vocabulary_rebuilds_the_splits_boi_and_keeps_sequence_checkpoints(setting, tmp_path):
    """A dataset's vocabulary chosen anew (datasets.VOCABULARIES) rebuilds its split's BoI in place, same split id:
    item sequences are unchanged, so sequence checkpoints stay valid; LURM's, bound to the interests, are refused."""
    import shutil

    import pyarrow.dataset as pads

    from raylurm.evaluate.harness import check_split
    from raylurm.evaluate.split import Split, same_vocabulary

    root, split, checkpoints = setting
    copy = tmp_path / "split"
    shutil.copytree(split.root, copy)
    before = Split.load(copy)
    chosen = BuildConfig(embedding=ItemEmbeddingConfig(method="cooccurrence", dim=16), vocabulary=VocabularyConfig(num_interests="items"),
                         boi=BoiConfig(on_unknown_items="skip"))
    assert not same_vocabulary(before, chosen)
    after = materialise(root / "data", SPLIT, root=copy, build_config=chosen)
    assert after.id == before.id and after.meta["vocabulary_hash"] != before.meta["vocabulary_hash"]
    assert after.meta["previous_vocabulary_hashes"] == after.meta["same_item_sequences"] == [before.meta["vocabulary_hash"]]
    assert same_vocabulary(after, chosen)
    for part in ("pretrain", "history_test", "before_cutoff"):
        manifest = json.loads((after.boi(part) / "manifest.json").read_text())
        assert manifest["vocabulary_hash"] == after.meta["vocabulary_hash"], part

        def items(s):
            return pads.dataset(s.boi(part) / "users").to_table(columns=["user_id", "items"]).to_pandas().set_index("user_id") \
                .sort_index()["items"].map(list)
        assert items(after).equals(items(Split(split.root, split.meta))), f"{part}: the item sequences do not depend on the vocabulary"
    assert check_split(checkpoints["atrank"], after)["method"] == "atrank"
    with pytest.raises(ValueError, match="earlier vocabulary"):
        check_split(checkpoints["lurm"], after)
    stamp = (after.boi("pretrain") / "manifest.json").stat().st_mtime_ns
    assert materialise(root / "data", SPLIT, root=copy, build_config=chosen).meta == after.meta  # chosen already: kept
    assert (after.boi("pretrain") / "manifest.json").stat().st_mtime_ns == stamp
