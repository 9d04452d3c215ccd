"""Scripted migration of many models: a TOML manifest, one process per model, resumable.

:func:`migrate` converts every model of a manifest into ``ROOT/<name>`` (a run directory,
exactly what ``tf2torch convert`` writes), ``jobs`` models at a time, each in its own
process group, so that a model past ``timeout`` is killed together with its TensorFlow
worker.  A model that fails or errors does not stop the others.  ``ROOT/summary.json`` is
rewritten (atomically) after every model and at the end.

The manifest (paths in it are relative to the manifest's directory)::

    [defaults]                      # optional; any model key except name and source
    opset = 17
    atol = 1e-4

    [[models]]
    name = "tagger"                 # unique; the run directory is ROOT/tagger
    source = "models/tagger.keras"  # as `tf2torch convert` takes it
    inputs = "data/tagger.npz"      # optional comparison inputs
    input_ranges = { tokens = [0, 50] }
    output_tolerances = { logits = [1e-4, 1e-3] }
    patches = ["my_patches"]        # a directory or a list of them
    fold_for_inference = false       # true: BatchNorm folded, an inference-only run

Model keys: ``name``, ``source`` (both required), ``inputs``, ``input_ranges``,
``input_specs`` (list of ``"x=float32[None,28,28,1]"``), ``atol``, ``rtol``,
``output_tolerances``, ``patches``, ``opset``, ``seed``, ``batch``, ``fold_for_inference``,
``keep_batchnorm`` (accepted; BatchNorm is kept by default), ``memory`` (a Ray task's request),
``custom_objects``, ``unsafe`` (Keras ``safe_mode`` off), ``worker_timeout`` and
``timeout`` (seconds for this model's whole conversion; overrides :func:`migrate`'s
``timeout``, e.g. for one large network).
The whole manifest is validated before anything runs; a problem raises
:class:`ManifestError` naming the model and the key.  A model whose files are missing or
corrupt is not a manifest problem: it is that model's ``error``.

``resume=True`` skips a model whose run directory is complete (``report.json`` with a
verdict) and whose fingerprint is unchanged: a SHA-256 over its settings and the content of
its source (file, SavedModel directory or factory module), inputs, patch directories and
custom-objects module, stored in ``ROOT/<name>/.migrate.json`` once the run is in place.

``shard="K/N"`` converts only the K-th of N slices (:mod:`pipeline.migration.shard`), and
:func:`merge_shards` joins the shards' summaries (:mod:`pipeline.migration.merge`).
``ray=ADDRESS`` runs each model as a Ray task (:mod:`pipeline.migration.ray_backend`); the
manifest's ``memory`` key (bytes, or ``"8GB"``) is what the task asks Ray for.

Importing this module is cheap: it imports neither torch nor TensorFlow (the conversions
run in child processes).
"""

from pipeline.migration.child import child_main
from pipeline.migration.fingerprint import fingerprint
from pipeline.migration.manifest import (
    DEFAULT_TIMEOUT,
    PAIRS,
    STAGES,
    STATE_JSON,
    SUMMARY_JSON,
    Manifest,
    ManifestError,
    ModelSpec,
    load_manifest,
)
from pipeline.migration.merge import MergeResult, merge_shards
from pipeline.migration.results import MigrationEvent, MigrationResult, ModelResult
from pipeline.migration.scheduler import DEFAULT_RAY_RETRIES, migrate
from pipeline.migration.shard import Shard, parse_shard
from pipeline.migration.shard import select as select_shard

__all__ = [
    "DEFAULT_RAY_RETRIES",
    "DEFAULT_TIMEOUT",
    "PAIRS",
    "STAGES",
    "STATE_JSON",
    "SUMMARY_JSON",
    "Manifest",
    "ManifestError",
    "MergeResult",
    "MigrationEvent",
    "MigrationResult",
    "ModelResult",
    "ModelSpec",
    "Shard",
    "child_main",
    "fingerprint",
    "load_manifest",
    "merge_shards",
    "migrate",
    "parse_shard",
    "select_shard",
]
