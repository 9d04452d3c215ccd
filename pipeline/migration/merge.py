"""``tf2torch migrate-merge SHARD_DIR... -o OUT``: the shards of a migration as one summary.

Each SHARD_DIR is the output root of one ``migrate --shard K/N`` (e.g. a CI job's artifact).
The merge checks that the shards fit together before writing anything: every summary is a
shard's, all come from the same manifest (the same model list) and the same N, each K from
1 to N appears exactly once, no model is in two shards, every shard finished (``complete``),
and together they hold every model of the manifest.  Then ``OUT/summary.json`` lists the
models in manifest order (run directories and logs pointing into the shard directories as
given) and ``OUT/junit.xml`` has one test case per model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.errors import BadInputError
from pipeline.migration.junit import write_junit
from pipeline.migration.manifest import SUMMARY_JSON, SUMMARY_SCHEMA, VERDICTS
from pipeline.migration.results import _write_json

JUNIT_XML = "junit.xml"


@dataclass
class MergeResult:
    """What :func:`merge_shards` wrote."""

    summary_path: Path
    junit_path: Path
    counts: dict[str, int]

    @property
    def exit_code(self) -> int:
        """0 every model passed, 1 otherwise."""
        return 0 if sum(self.counts.values()) == self.counts["pass"] else 1


def _load(shard_dir: Path) -> dict[str, Any]:
    path = shard_dir / SUMMARY_JSON
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"{shard_dir}: no {SUMMARY_JSON} (not a migrate output)") from None
    except (OSError, ValueError) as err:
        raise BadInputError(f"{path}: unreadable: {err}") from None
    if not isinstance(summary, dict) or summary.get("schema") != SUMMARY_SCHEMA:
        raise BadInputError(f"{path}: not a migration summary ({SUMMARY_SCHEMA})")
    if "shard" not in summary:
        raise BadInputError(
            f"{path}: not a shard's summary: produce the shards with migrate --shard K/N"
        )
    return summary


def _moved(path: str | None, old_root: str, new_root: Path) -> str | None:
    """``path`` under ``new_root`` when it was under ``old_root`` (the shard was downloaded)."""
    if path is None:
        return None
    try:
        return str(new_root / Path(path).relative_to(old_root))
    except ValueError:
        return path


def merge_shards(shard_dirs: list[Path], out: Path) -> MergeResult:
    """Join the shard summaries in ``shard_dirs`` into ``out/summary.json`` and
    ``out/junit.xml``; raises :class:`BadInputError` (nothing written) when they do not fit."""
    if not shard_dirs:
        raise BadInputError("migrate-merge needs at least one shard directory")
    summaries = [(d.absolute(), _load(d)) for d in shard_dirs]
    first_dir, first = summaries[0]
    count = first["shard"]["count"]
    manifest_models = first["shard"]["manifest_models"]
    by_index: dict[int, Path] = {}
    owner: dict[str, Path] = {}
    for shard_dir, summary in summaries:
        shard = summary["shard"]
        label = f"{shard_dir} (shard {shard['index']}/{shard['count']})"
        if shard["count"] != count:
            raise BadInputError(
                f"{label} is one of {shard['count']} shards, {first_dir} one of {count}: "
                "merge the shards of one run"
            )
        if shard["manifest_models"] != manifest_models:
            raise BadInputError(
                f"{label} and {first_dir} come from manifests with different models: "
                "merge the shards of one run"
            )
        if shard["index"] in by_index:
            raise BadInputError(
                f"shard {shard['index']}/{count} given twice: {by_index[shard['index']]} "
                f"and {shard_dir}"
            )
        by_index[shard["index"]] = shard_dir
        if not summary["complete"]:
            raise BadInputError(
                f"{label} did not finish (its summary is not complete): rerun that shard "
                "with --resume"
            )
        for model in shard["models"]:
            if model in owner:
                raise BadInputError(f"model {model!r} is in both {owner[model]} and {shard_dir}")
            owner[model] = shard_dir
    missing = [f"{k}/{count}" for k in range(1, count + 1) if k not in by_index]
    if missing:
        raise BadInputError(
            f"shard {', '.join(missing)} missing: pass the directories of all {count} shards"
        )
    absent = [m for m in manifest_models if m not in owner]
    if absent:
        raise BadInputError(f"no shard holds model(s) {', '.join(absent)}")
    results: dict[str, dict[str, Any]] = {}
    for shard_dir, summary in summaries:
        for model in summary["models"]:
            entry = dict(model)
            entry["run_dir"] = _moved(entry.get("run_dir"), summary["root"], shard_dir)
            entry["log"] = _moved(entry.get("log"), summary["root"], shard_dir)
            results[entry["name"]] = entry
    models = [results[name] for name in manifest_models]
    counts = {v: sum(m["verdict"] == v for m in models) for v in VERDICTS}
    out = out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    merged = {
        "schema": SUMMARY_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "manifest": first["manifest"],
        "root": str(out),
        "complete": True,
        "seconds": max(s["seconds"] for _, s in summaries),
        "counts": counts,
        "models": models,
        "shards": [
            {"index": s["shard"]["index"], "dir": str(d), "seconds": s["seconds"]}
            for d, s in sorted(summaries, key=lambda item: item[1]["shard"]["index"])
        ],
    }
    summary_path = out / SUMMARY_JSON
    _write_json(summary_path, merged)
    junit_path = out / JUNIT_XML
    write_junit(summary_path, junit_path)
    return MergeResult(summary_path, junit_path, counts)
