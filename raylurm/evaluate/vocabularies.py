"""``python -m raylurm.evaluate.vocabularies`` — which interest vocabulary, chosen on validation (LURM §3.1).

The interests are the BoI's coordinates: LURM compresses them and raw BoI reads them directly, so a
vocabulary the users' labels cannot be read from caps both (raw BoI with a vocabulary is the ceiling
LURM is judged against). Each variant — item embeddings (``text``: the paper's eq. 1-3 on item
texts; ``cooccurrence``: PPMI + SVD of β-window pairs) × D interests — is built on the evaluation
split's pretraining part (embeddings and faiss k-means learnt there, one embedding per method
shared by its D values) under ``<split>/variants/<name>/``, and scored by the sweeps' validation
metric: ``val_auc``, the profiling probe's AUC on the **selection users** only
(:class:`raylurm.tune.validation.ProfilingValidation`; no test user is encoded or read). ``items``
as D is one interest per item with an embedding (no clustering: the uncompressed vocabulary). A
variant that cannot be built (more interests than items with embeddings) is reported and skipped.
The table (also ``--out``, CSV) is what a dataset's default vocabulary is chosen from.

Example::

    python -m raylurm.evaluate.vocabularies --data ml-1m --interests 100,388,1000,3706,items --out results/ml-1m/vocabularies.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from raylurm import cli

log = logging.getLogger("raylurm.evaluate.vocabularies")


@dataclasses.dataclass(frozen=True)
class Variant:
    embedding: str  # "text" or "cooccurrence"
    num_interests: int | str  # D, or "items": one interest per item

    @property
    def name(self) -> str:
        return f"{self.embedding}-{'items' if self.num_interests == 'items' else f'd{self.num_interests}'}"

    def build_config(self, base=None):
        from raylurm.boi.build import BuildConfig
        from raylurm.boi.embeddings.config import ItemEmbeddingConfig
        from raylurm.boi.vocabulary import VocabularyConfig

        base = base or BuildConfig()
        return dataclasses.replace(base, embedding=ItemEmbeddingConfig(**{**dataclasses.asdict(base.embedding), "method": self.embedding}),
                                   vocabulary=VocabularyConfig(**{**dataclasses.asdict(base.vocabulary), "num_interests": self.num_interests}))


def build_variant(split, variant: Variant, progress: bool = False) -> Path:
    """The variant's BoI of the split's pretraining part (built once), reusing its embedding method's item embeddings."""
    from raylurm.boi.build import build
    from raylurm.evaluate.split import stored_build_config

    root = split.root / "variants"
    out = root / variant.name / "boi" / "pretrain"
    if (out / "manifest.json").exists():
        return out
    base = stored_build_config(split)
    candidates = [split.boi("pretrain")] if base.embedding == variant.build_config(base).embedding else []  # the split's own
    candidates += sorted(d / "boi" / "pretrain" for d in root.glob(f"{variant.embedding}-d*")) if root.exists() else []
    shared = next((c / "item_embeddings" for c in candidates if (c / "item_embeddings").exists()), None)
    log.info("building vocabulary variant %s%s", variant.name, f" (reusing {shared})" if shared else "")
    # co-occurrence embeddings leave items that never meet a β-window partner without an interest: their events
    # are skipped and counted (the table reports them) rather than failing the variant
    config = variant.build_config(dataclasses.replace(base, boi=dataclasses.replace(base.boi, on_unknown_items="skip")))
    build(split.dataset("pretrain"), out, config, embeddings_dir=shared, progress=progress)
    return out


def raw_boi_score(boi_dir: Path, users_parquet: Path) -> dict[str, float]:
    """``val_auc`` (and per label column) of the raw BoI rows of ``boi_dir`` on the selection users."""
    from raylurm.evaluate import represent
    from raylurm.tune.validation import ProfilingValidation

    validation = ProfilingValidation(boi_dir, users_parquet)
    raw = represent.raw_boi(boi_dir)
    row_of = {u: i for i, u in enumerate(raw.user_ids.tolist())}
    rows = np.array([row_of[u] for u in validation.table["user_id"].to_pylist()], dtype=np.int64)
    return validation.score_features(raw.features[rows])


def compare(split, variants: list[Variant], progress: bool = False) -> list[dict]:
    import json

    from raylurm.boi.vocabulary import TooManyInterests

    users = split.dataset("history") / "users.parquet"
    rows = []
    for variant in variants:
        started = time.perf_counter()
        try:
            boi = build_variant(split, variant, progress)
        except TooManyInterests as err:  # e.g. more interests than items with embeddings: the other variants still count
            log.warning("%s skipped: %s", variant.name, err)
            continue
        built = time.perf_counter() - started
        manifest = json.loads((boi / "manifest.json").read_text())
        scores = raw_boi_score(boi, users)
        rows.append({"variant": variant.name, "embedding": variant.embedding, "num_interests": manifest["num_interests"],
                     "vocabulary_hash": manifest["vocabulary_hash"], "build_seconds": built,
                     "skipped_events": manifest["summary"].get("skipped_events", 0), **scores})
        log.info("%s: raw BoI val_auc %.4f", variant.name, scores.get("val_auc", float("nan")))
    return rows


def markdown(rows: list[dict]) -> str:
    columns = sorted({k for r in rows for k in r if k.startswith("val_auc/")})
    best = max(rows, key=lambda r: r.get("val_auc", -1.0)) if rows else None
    lines = ["| embeddings | D | events without an interest | raw BoI val_auc | " + " | ".join(c.split("/", 1)[1] for c in columns) + " |",
             "|---|---|---|---|" + "---|" * len(columns)]
    for r in rows:
        mark = "**" if r is best else ""
        d = f"{r['num_interests']:,}" + (" (one per item)" if r["variant"].endswith("-items") else "")
        lines.append(f"| {r['embedding']} | {d} | {r['skipped_events']:,} | {mark}{r['val_auc']:.4f}{mark} | "
                     + " | ".join(f"{r[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines)


COMMAND = "python -m raylurm.evaluate.vocabularies --data {data} --out {out}"


def section(csv_path: Path, split) -> str:
    """RESULTS.md's "Interest vocabularies" section from the comparison's CSV ('' when there is none);
    the row of the split's own vocabulary is marked."""
    import pandas as pd

    if not Path(csv_path).exists():
        return ""
    frame = pd.read_csv(csv_path)
    rows = frame.to_dict("records")
    for r in rows:
        r["variant"] = str(r["variant"])
    table = markdown(rows)
    own = split.meta.get("vocabulary_hash")
    chosen = [r for r in rows if r["vocabulary_hash"] == own]
    where = (f"The split's BoI — what LURM, raw BoI and every row above read — uses **{chosen[0]['embedding']} embeddings, "
             f"D = {int(chosen[0]['num_interests']):,}** (vocabulary `{own}`)" if chosen else
             f"The split's vocabulary `{own}` is none of these rows")
    return ("### Interest vocabularies\n\n"
            "Which vocabulary a dataset's split uses is chosen on validation: raw BoI's profiling `val_auc` on the "
            "selection users only (the sweeps' metric; no test user is read), one row per item embedding × D, each "
            f"built on the split's pretraining part (`{COMMAND.format(data=split.meta.get('dataset'), out=csv_path)}`). "
            "Raw BoI with a vocabulary is the ceiling LURM is judged against. " + where + ".\n\n" + table + "\n")


def _interests(text: str) -> list[int | str]:
    values = []
    for d in (d.strip() for d in text.split(",") if d.strip()):
        if d == "items":
            values.append(d)
            continue
        try:
            values.append(int(float(d)))
        except ValueError:
            raise ValueError(f"--interests: expected whole numbers or 'items', got {d!r}") from None
        if values[-1] < 1 or values[-1] != float(d):
            raise ValueError(f"--interests: expected whole numbers >= 1 or 'items', got {d!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raylurm.evaluate.vocabularies", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(p)
    p.add_argument("--data", default="ml-1m", help="prepared dataset dir or bundled name (default: %(default)s)")
    p.add_argument("--embeddings", default="text,cooccurrence", help="item embedding methods (default: %(default)s)")
    p.add_argument("--interests", default="100,388,1000,items",
                   help="D values, comma-separated; at most the number of items with embeddings; items: one interest "
                        "per item (default: %(default)s)")
    p.add_argument("--out", type=Path, help="also write the table as CSV here (e.g. results/ml-1m/vocabularies.csv)")
    cli.add_ray_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from raylurm.data import datasets
    from raylurm.data.io import atomic_file
    from raylurm.evaluate.split import materialise
    from raylurm.runtime import init_ray

    init_ray(args.address, num_cpus=args.num_cpus)
    split = materialise(datasets.resolve(args.data))
    variants = [Variant(e.strip(), d) for e in args.embeddings.split(",") if e.strip() for d in _interests(args.interests)]
    rows = compare(split, variants, progress=not args.quiet)
    print(markdown(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(args.out) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        log.info("wrote %s", args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.execute(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
