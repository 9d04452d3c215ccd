"""The migration manifest: TOML models with their conversion settings, validated whole before anything runs."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import BadInputError

REPORT_NAME = "report.json"  # pipeline.core.run_dir.REPORT_NAME, without importing numpy
SUMMARY_JSON = "summary.json"
SUMMARY_SCHEMA = "tf2torch.migration/1"
STATE_JSON = ".migrate.json"
WORK_DIR = ".migrate"
"""Hidden directory in ROOT: per-model logs (``<name>.log``), requests, the lock file."""
DEFAULT_TIMEOUT = 1800.0
"""Seconds per model (ResNet50 converts in about a minute on 2 CPU cores)."""
PAIRS = ("tf-ort", "tf-torch", "ort-torch")
STAGES = ("starting", "export", "fixup", "import", "compare", "gradients")
"""The stages a model goes through, in order (``starting``: the process is loading torch)."""
VERDICTS = ("pass", "fail", "error", "timeout")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$")
_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}
_PATH_KEYS = ("inputs", "custom_objects")


class ManifestError(BadInputError):
    """The manifest is invalid; ``model`` and ``key`` say where (None when not about one)."""

    kind = "bad_manifest"

    def __init__(
        self, manifest: Path, message: str, model: str | None = None, key: str | None = None
    ):
        self.model = model
        self.key = key
        super().__init__(f"{manifest}: {message}")


# --------------------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class ModelSpec:
    """One ``[[models]]`` entry after defaults are applied and paths resolved."""

    name: str
    source: str
    """The source as ``convert`` takes it, file paths made absolute."""
    settings: dict[str, Any]
    """The convert options (manifest keys, JSON values, paths absolute)."""
    timeout: float | None = None
    """The manifest's ``timeout`` for this model (None: the migration's)."""
    memory: int | None = None
    """The manifest's ``memory`` for this model, in bytes: what a Ray task asks for (None:
    estimated from the size of its weights, :func:`pipeline.migration.resources.memory_request`)."""


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: the models in file order."""

    path: Path
    models: list[ModelSpec]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checker:
    """Validates one table (``[defaults]`` or a model); errors name the table and key."""

    def __init__(self, manifest: Path, base: Path, where: str, model: str | None) -> None:
        self.manifest, self.base, self.where, self.model = manifest, base, where, model

    def fail(self, key: str | None, message: str) -> ManifestError:
        at = f"{self.where}, key '{key}'" if key else self.where
        return ManifestError(self.manifest, f"{at}: {message}", self.model, key)

    def path(self, key: str, value: object) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a path string, got {value!r}")
        return str((self.base / value).absolute())

    def tolerance(self, key: str, value: object) -> float:
        if not _is_number(value):
            raise self.fail(key, f"bad tolerance {value!r}: expected a number")
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number) or number < 0:
            raise self.fail(key, f"bad tolerance {value!r}: must be finite and >= 0")
        return number

    def integer(self, key: str, value: object, minimum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(key, f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def memory(self, key: str, value: object) -> int:
        """Bytes from an integer or a string such as ``"8GB"`` / ``"512 MiB"``."""
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        match = _MEMORY.match(value) if isinstance(value, str) else None
        if match is None or float(match.group(1)) <= 0:
            raise self.fail(
                key, f'expected bytes > 0 or a size such as "8GB" or "512MiB", got {value!r}'
            )
        return int(float(match.group(1)) * _UNITS[match.group(2)])

    def table(self, key: str, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table such as {{ name = [...] }}, got {value!r}")
        return value

    def option(self, key: str, value: object) -> Any:
        """Check and normalise one convert option."""
        if key in _PATH_KEYS:
            if key == "custom_objects" and isinstance(value, str) and not value.endswith(".py"):
                if not value:
                    raise self.fail(key, "expected a module name or a file.py path")
                return value  # a dotted module name
            return self.path(key, value)
        if key == "patches":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not items:
                raise self.fail(key, f"expected a directory or a list of them, got {value!r}")
            return [self.path(key, item) for item in items]
        if key == "input_ranges":
            ranges = {}
            for name, bounds in self.table(key, value).items():
                ok = (
                    isinstance(bounds, list)
                    and len(bounds) == 2
                    and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
                )
                if not ok:
                    raise self.fail(key, f"{name} = {bounds!r}: expected [LO, HI] integers")
                if bounds[1] <= bounds[0]:
                    raise self.fail(key, f"{name} = {bounds!r}: HI must be greater than LO")
                ranges[name] = list(bounds)
            return ranges
        if key == "input_specs":
            from pipeline.export.inputs import parse_input_specs

            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.fail(
                    key, f'expected a list such as ["x=float32[None,4]"], got {value!r}'
                )
            try:
                parse_input_specs(value)
            except BadInputError as err:
                raise self.fail(key, str(err).replace("--input-spec ", "")) from None
            return list(value)
        if key in ("atol", "rtol"):
            return self.tolerance(key, value)
        if key == "output_tolerances":
            tolerances = {}
            for name, pair in self.table(key, value).items():
                if not isinstance(pair, list) or len(pair) != 2:
                    raise self.fail(key, f"{name} = {pair!r}: bad tolerance, expected [ATOL, RTOL]")
                tolerances[name] = [self.tolerance(key, pair[0]), self.tolerance(key, pair[1])]
            return tolerances
        if key == "opset":
            return self.integer(key, value, 9)
        if key == "seed":
            return self.integer(key, value, 0)
        if key == "batch":
            return self.integer(key, value, 1)
        if key in ("keep_batchnorm", "fold_for_inference", "unsafe"):
            return self.boolean(key, value)
        if key == "memory":
            return self.memory(key, value)
        if key in ("worker_timeout", "timeout"):
            if not _is_number(value) or not value > 0:  # type: ignore[operator]
                raise self.fail(key, f"expected a number of seconds > 0, got {value!r}")
            return float(value)  # type: ignore[arg-type]
        raise AssertionError(key)


OPTION_KEYS = (
    "inputs",
    "input_ranges",
    "input_specs",
    "atol",
    "rtol",
    "output_tolerances",
    "patches",
    "opset",
    "seed",
    "batch",
    "keep_batchnorm",
    "fold_for_inference",
    "custom_objects",
    "unsafe",
    "worker_timeout",
    "timeout",
    "memory",
)
MODEL_KEYS = ("name", "source", *OPTION_KEYS)


def _resolve_source(source: str, base: Path) -> str:
    path_part, sep, function = source.rpartition(":")
    if sep and function.isidentifier():
        if path_part.endswith(".py"):
            return f"{(base / path_part).absolute()}:{function}"
        return source  # package.module:function, imported relative to the working directory
    return str((base / source).absolute())


def _unknown_key(checker: _Checker, key: str, allowed: tuple[str, ...]) -> ManifestError:
    return checker.fail(key, f"unknown key; allowed keys: {', '.join(allowed)}")


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a migration manifest; raises :class:`ManifestError` (or
    :class:`BadInputError` when the file is missing) before anything is converted."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"manifest not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(path, f"not valid TOML: {err}") from None
    base = path.absolute().parent
    top = _Checker(path, base, "top level", None)
    for key in data:
        if key not in ("defaults", "models"):
            raise top.fail(key, "unknown top-level key; expected [defaults] and [[models]]")
    defaults_checker = _Checker(path, base, "[defaults]", None)
    raw_defaults = data.get("defaults", {})
    if not isinstance(raw_defaults, dict):
        raise defaults_checker.fail(None, "must be a table")
    defaults = {}
    for key, value in raw_defaults.items():
        if key in ("name", "source"):
            raise defaults_checker.fail(key, "belongs in each [[models]] table, not [defaults]")
        if key not in OPTION_KEYS:
            raise _unknown_key(defaults_checker, key, OPTION_KEYS)
        defaults[key] = defaults_checker.option(key, value)
    raw_models = data.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise top.fail(None, "no models: add at least one [[models]] table with name and source")
    models: list[ModelSpec] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(raw_models, 1):
        raw_name = raw.get("name") if isinstance(raw, dict) else None
        label = f"model '{raw_name}'" if isinstance(raw_name, str) else f"model #{number}"
        checker = _Checker(path, base, label, raw_name if isinstance(raw_name, str) else None)
        if not isinstance(raw, dict):
            raise checker.fail(None, "[[models]] entries must be tables")
        for key in raw:
            if key not in MODEL_KEYS:
                raise _unknown_key(checker, key, MODEL_KEYS)
        if "name" not in raw:
            raise checker.fail("name", "missing; every model needs a unique name")
        name = raw["name"]
        if not isinstance(name, str) or not _NAME.match(name) or name == SUMMARY_JSON:
            raise checker.fail(
                "name", f"bad name {name!r}: use letters, digits, '_', '-' and '.' (not first)"
            )
        if name in seen:
            raise checker.fail("name", f"duplicate name (also model #{seen[name]})")
        seen[name] = number
        source = raw.get("source")
        if source is None:
            raise checker.fail("source", "missing; every model needs a source")
        if not isinstance(source, str) or not source:
            raise checker.fail(
                "source", f"expected a model path or file.py:function, got {source!r}"
            )
        settings = dict(defaults)
        for key in OPTION_KEYS:
            if key in raw:
                settings[key] = checker.option(key, raw[key])
        # timeout and memory are how the model is run, not convert options: not fingerprinted
        timeout = settings.pop("timeout", None)
        memory = settings.pop("memory", None)
        models.append(ModelSpec(name, _resolve_source(source, base), settings, timeout, memory))
    return Manifest(path, models)
