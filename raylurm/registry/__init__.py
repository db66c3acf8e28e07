"""The best-checkpoint registry that Serve and the evaluator read.

Examples::

    python -m raylurm.registry list                       # every entry; * marks the one served per method
    python -m raylurm.registry show lurm                  # the current LURM entry: config, metrics, provenance
    python -m raylurm.registry promote lurm study.a1b2c3d4_00003.e4    # serve another entry
    python -m raylurm.registry add demo-lurm              # a pretraining run's checkpoint (no sweep needed)

A sweep (``python -m raylurm.tune``) exports the best checkpoint of each method, by its
validation metric, as an *entry*: a self-contained checkpoint (``model.pt`` + ``meta.json``;
the model is rebuilt from it alone; ``boi/`` holds the interest vocabulary and BoI settings that
turn raw events into its inputs) plus ``entry.json`` with the sampled config, the validation
metrics, the sweep, trial and epoch it came from and the evaluation split. Layout::

    <registry>/<method>/<entry>/{model.pt, meta.json, entry.json, boi/{manifest.json, vocabulary/}}
    <registry>/<method>/CURRENT                  the promoted entry's name

Entries are written to a temporary directory and renamed into place; ``CURRENT`` is replaced
atomically, so a reader (a Serve replica reloading) sees the old entry or the new one, never
half of one. A new sweep's best is promoted when the method has no current entry, or when it
beats the current entry on the same split and metric; otherwise it is registered and the log
says how to promote it.
"""

from raylurm.registry.store import CURRENT, ENTRY, Entry, Registry, add_checkpoint, default_root

__all__ = ["CURRENT", "ENTRY", "Entry", "Registry", "add_checkpoint", "default_root"]
