"""Stored subjects: an evaluation resumes, and rows of methods evaluated in other sessions pool into one report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raylurm.evaluate import harness
from raylurm.evaluate.protocol import USER_COLUMNS, EvalConfig, Subject
from raylurm.evaluate.store import SubjectStore


def _checkpoint(root, run, epoch=3, step=30):
    path = root / run / f"checkpoint_{epoch}"
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"method": run.split("-")[0], "split": "abc", "epoch": epoch, "step": step,
                                                "validation_metric": "val_ndcg10", "best_value": 0.1,
                                                "train": {"seed": 0, "batch_size": 8, "num_workers": 1}, "method_config": {}}))
    return path


def _results(name, value):
    rows = [{"task": "next_item", "target": "full", "metric": "HR@10", "seed": np.int64(0), "value": np.float64(value),
             "catalogue": 3706}]
    per_user = pd.DataFrame({c: [None] * 3 for c in USER_COLUMNS}).assign(
        task="next_item", target="full", model=name, group="pretrained", run=0, seed=0, user_id=["1", "2", "3"],
        kind="rank", label=np.nan, score=np.nan, pred=np.nan, rank=[1.0, 5.0, 20.0])
    return rows, per_user


def test_a_stored_subject_is_read_back_only_with_resume_and_only_for_the_same_key(tmp_path):
    config = EvalConfig()
    subject = Subject("sasrec", "pretrained", None, checkpoint=_checkpoint(tmp_path, "sasrec-eval-abc"))
    rows, per_user = _results("sasrec", 0.29)
    SubjectStore(tmp_path / "out", "abc", config, "c0ffee").put(subject, rows, per_user)

    assert SubjectStore(tmp_path / "out", "abc", config, "c1").get(subject) is None  # no --resume: evaluate again
    entry = SubjectStore(tmp_path / "out", "abc", config, "c1", resume=True).get(subject)
    assert entry is not None and entry.commit == "c0ffee"
    assert entry.rows == [{"task": "next_item", "target": "full", "metric": "HR@10", "seed": 0, "value": 0.29, "catalogue": 3706}]
    pd.testing.assert_frame_equal(entry.per_user, per_user[list(USER_COLUMNS)])
    assert entry.record["checkpoint"] == "sasrec-eval-abc/checkpoint_3" and entry.record["meta"]["epoch"] == 3

    other_config = EvalConfig(negatives=50)
    assert SubjectStore(tmp_path / "out", "abc", other_config, "c1", resume=True).get(subject) is None
    assert SubjectStore(tmp_path / "out", "other-split", config, "c1", resume=True).get(subject) is None
    later = Subject("sasrec", "pretrained", None, checkpoint=_checkpoint(tmp_path, "sasrec-eval-abc", epoch=9, step=90))
    assert SubjectStore(tmp_path / "out", "abc", config, "c1", resume=True).get(later) is None  # a newer checkpoint


def test_what_reads_interests_is_keyed_by_its_vocabulary(tmp_path):
    """The split's BoI is rebuilt when its dataset's vocabulary is chosen anew (same split id): raw BoI's entry of the
    earlier vocabulary is not read back; a subject that reads no interests keeps its key (and its entries)."""
    config = EvalConfig()
    raw = Subject("raw BoI", "baseline", None, vocabulary="v1")
    rows, per_user = _results("raw BoI", 0.1)
    SubjectStore(tmp_path / "out", "abc", config, "c0").put(raw, rows, per_user)
    store = SubjectStore(tmp_path / "out", "abc", config, "c1", resume=True)
    assert store.get(raw) is not None and store.get(Subject("raw BoI", "baseline", None, vocabulary="v2")) is None
    from raylurm.evaluate.store import subject_key

    assert "vocabulary" not in subject_key("abc", config, Subject("popularity", "baseline", None, popularity=True))
    # carried into a report only while the split still has that vocabulary
    assert [e.name for e in SubjectStore(tmp_path / "out", "abc", config, "c2", resume=True, vocabulary="v1").carried()] == ["raw BoI"]
    assert SubjectStore(tmp_path / "out", "abc", config, "c2", resume=True, vocabulary="v2").carried() == []


def test_resume_carries_subjects_not_evaluated_here_and_a_new_checkpoint_replaces_its_old_entry(tmp_path):
    config = EvalConfig()
    first = SubjectStore(tmp_path / "out", "abc", config, "aaa")
    sasrec = Subject("sasrec", "pretrained", None, checkpoint=_checkpoint(tmp_path, "sasrec-eval-abc"))
    twin = Subject("sasrec (random init)", "random init", None, checkpoint=sasrec.checkpoint, seed=0)
    popularity = Subject("popularity", "baseline", None, popularity=True)
    for s, v in ((sasrec, 0.29), (twin, 0.002), (popularity, 0.035)):
        first.put(s, *_results(s.name, v))

    # a later session trains and evaluates dss only, and reads popularity back
    second = SubjectStore(tmp_path / "out", "abc", config, "bbb", resume=True)
    dss = Subject("dss", "pretrained", None, checkpoint=_checkpoint(tmp_path, "dss-eval-abc"))
    second.put(dss, *_results("dss", 0.30))
    assert second.get(popularity) is not None
    carried = second.carried()
    assert sorted(e.name for e in carried) == ["sasrec", "sasrec (random init)"] and {e.commit for e in carried} == {"aaa"}

    # without --resume nothing is carried
    assert SubjectStore(tmp_path / "out", "abc", config, "ccc").carried() == []

    # sasrec retrained: its new entry replaces the old one, which is no longer carried
    third = SubjectStore(tmp_path / "out", "abc", config, "ddd", resume=True)
    retrained = Subject("sasrec", "pretrained", None, checkpoint=_checkpoint(tmp_path, "sasrec-eval-abc-2", epoch=40, step=400))
    third.put(retrained, *_results("sasrec", 0.31))
    fourth = SubjectStore(tmp_path / "out", "abc", config, "eee", resume=True)
    values = {e.name: e.rows[0]["value"] for e in fourth.carried()}
    assert values == {"sasrec": 0.31, "sasrec (random init)": 0.002, "dss": 0.30, "popularity": 0.035}


def test_the_report_of_carried_runs_uses_their_stored_records(tmp_path):
    config = EvalConfig()
    store = SubjectStore(tmp_path / "out", "abc", config, "aaa")
    sasrec = Subject("sasrec", "pretrained", None, checkpoint=_checkpoint(tmp_path, "sasrec-eval-abc"))
    store.put(sasrec, *_results("sasrec", 0.29))
    carried = SubjectStore(tmp_path / "out", "abc", config, "bbb", resume=True).carried()
    records = harness.run_records({}, carried)
    table = harness.checkpoint_table(records)
    assert "| sasrec | 0 | 0 | 3 | 3 | val_ndcg10 0.1000 | no | – | 30 | 8 × 1 | `sasrec-eval-abc/checkpoint_3` (carried from commit `aaa`) |" in table
    note = harness.earlier_note([], carried)
    assert "carried (not evaluated by this command): sasrec at commit `aaa`" in note and "read back" not in note


def test_a_row_value_that_cannot_be_stored_is_refused(tmp_path):
    subject = Subject("popularity", "baseline", None, popularity=True)
    rows, per_user = _results("popularity", 0.1)
    rows[0]["value"] = object()
    with pytest.raises(TypeError, match="not storable"):
        SubjectStore(tmp_path / "out", "abc", EvalConfig(), "aaa").put(subject, rows, per_user)
    assert not list((tmp_path / "out").glob("*/entry.json"))  # nothing half-written


def test_a_label_evaluated_again_drops_every_earlier_run_of_it_but_keeps_what_was_read_back(tmp_path):
    config = EvalConfig()
    seeds = [Subject("sasrec", "pretrained", None, run=k, checkpoint=_checkpoint(tmp_path, f"sasrec-eval-abc-seed{k}"))
             for k in range(3)]
    first = SubjectStore(tmp_path / "out", "abc", config, "aaa")
    for s in seeds:  # --pretrain-seeds 3
        first.put(s, *_results("sasrec", 0.29))
    assert len(list((tmp_path / "out").glob("*/entry.json"))) == 3, "one command's runs of a label all stay"

    # a later command reads run 0 back and evaluates a new run 1: the old runs 1 and 2 go, run 0 stays
    second = SubjectStore(tmp_path / "out", "abc", config, "bbb", resume=True)
    assert second.get(seeds[0]) is not None
    second.put(Subject("sasrec", "pretrained", None, run=1, checkpoint=_checkpoint(tmp_path, "sasrec-eval-abc-new1")),
               *_results("sasrec", 0.30))
    runs = sorted((e.run, e.rows[0]["value"]) for e in SubjectStore(tmp_path / "out", "abc", config, "c", resume=True).carried())
    assert runs == [(0, 0.29), (1, 0.30)]

    # retrained with one seed: every earlier run of the label is dropped, none is carried beside the new one
    third = SubjectStore(tmp_path / "out", "abc", config, "ccc", resume=True)
    third.put(Subject("sasrec", "pretrained", None, run=0, checkpoint=_checkpoint(tmp_path, "sasrec-eval-abc-new0")),
              *_results("sasrec", 0.31))
    runs = sorted((e.run, e.rows[0]["value"]) for e in SubjectStore(tmp_path / "out", "abc", config, "d", resume=True).carried())
    assert runs == [(0, 0.31)]


def test_hidden_directories_of_killed_writes_are_never_read(tmp_path):
    config = EvalConfig()
    store = SubjectStore(tmp_path / "out", "abc", config, "aaa")
    store.put(Subject("popularity", "baseline", None, popularity=True), *_results("popularity", 0.035))
    entry = next((tmp_path / "out").glob("*/entry.json")).parent
    half = tmp_path / "out" / f".{entry.name}.tmp-1-deadbeef"  # a write killed after entry.json
    half.mkdir()
    (half / "entry.json").write_text((entry / "entry.json").read_text().replace("popularity", "majority"))
    carried = SubjectStore(tmp_path / "out", "abc", config, "bbb", resume=True).carried()
    assert [e.name for e in carried] == ["popularity"]
