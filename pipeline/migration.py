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
    keep_batchnorm = true

Model keys: ``name``, ``source`` (both required), ``inputs``, ``input_ranges``,
``input_specs`` (list of ``"x=float32[None,28,28,1]"``), ``atol``, ``rtol``,
``output_tolerances``, ``patches``, ``opset``, ``seed``, ``batch``, ``keep_batchnorm``,
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

Importing this module is cheap: it imports neither torch nor TensorFlow (the conversions
run in child processes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pipeline.errors import BadInputError, Tf2TorchError
from pipeline.tf_client import death_reason

REPORT_NAME = "report.json"  # pipeline.run_dir.REPORT_NAME, without importing numpy
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
            from pipeline.inputs import parse_input_specs

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
        if key in ("keep_batchnorm", "unsafe"):
            return self.boolean(key, value)
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
    "custom_objects",
    "unsafe",
    "worker_timeout",
    "timeout",
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
        timeout = settings.pop("timeout", None)  # not a convert option, not fingerprinted
        models.append(ModelSpec(name, _resolve_source(source, base), settings, timeout))
    return Manifest(path, models)


# --------------------------------------------------------------------------- fingerprints


def _hash_path(digest: Any, path: Path) -> None:
    if path.is_file():
        digest.update(b"file\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    elif path.is_dir():
        digest.update(b"dir\0")
        for child in sorted(path.rglob("*")):
            if "__pycache__" in child.parts or not child.is_file():
                continue
            digest.update(str(child.relative_to(path)).encode() + b"\0")
            _hash_path(digest, child)
    else:
        digest.update(b"missing\0")


def _module_file(dotted: str) -> Path | None:
    """Where ``package.module`` lives on the import path, found without importing it."""
    parts = dotted.split(".")
    for entry in [os.getcwd(), *sys.path]:
        base = Path(entry or ".", *parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _content_paths(spec: ModelSpec) -> list[Path]:
    paths: list[Path] = []
    path_part, sep, function = spec.source.rpartition(":")
    if sep and function.isidentifier():
        found = Path(path_part) if path_part.endswith(".py") else _module_file(path_part)
        if found is not None:
            paths.append(found)
    else:
        paths.append(Path(spec.source))
    if "inputs" in spec.settings:
        paths.append(Path(spec.settings["inputs"]))
    paths.extend(Path(p) for p in spec.settings.get("patches", ()))
    custom = spec.settings.get("custom_objects")
    if custom:
        found = Path(custom) if custom.endswith(".py") else _module_file(custom)
        if found is not None:
            paths.append(found)
    return paths


def fingerprint(spec: ModelSpec) -> str:
    """SHA-256 over the model's source, settings and the content of every file it uses."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool_version = version("tf2torch")
    except PackageNotFoundError:
        tool_version = "unknown"
    digest = hashlib.sha256()
    header = {"source": spec.source, "settings": spec.settings, "tf2torch": tool_version}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for path in _content_paths(spec):
        digest.update(str(path).encode() + b"\0")
        _hash_path(digest, path)
    return digest.hexdigest()


# --------------------------------------------------------------------------- results


@dataclass
class ModelResult:
    """How one model of the migration ended."""

    name: str
    source: str
    verdict: str
    """``pass``, ``fail`` (converted, but a pair, gradient or parameter check disagrees),
    ``error`` (could not be converted) or ``timeout`` (killed after the timeout)."""
    run_dir: Path
    """``ROOT/<name>``; it holds this model's run when the verdict is pass or fail."""
    seconds: float
    error_kind: str | None = None
    """The :class:`~pipeline.errors.Tf2TorchError` kind, ``timeout``, ``worker_crash``
    (the conversion process died) or ``internal`` (a bug: see the log)."""
    error_message: str | None = None
    worst: dict[str, float | None] = field(default_factory=dict)
    """Per pair, the largest ``max_abs`` over the outputs (None: no value, e.g. NaN)."""
    resumed: bool = False
    """Skipped by ``resume``: an unchanged, complete run was already there."""
    log: Path | None = None

    def __bool__(self) -> bool:
        return self.verdict == "pass"

    def to_json(self) -> dict[str, Any]:
        """The model's entry in ``summary.json``."""
        return {
            "name": self.name,
            "source": self.source,
            "verdict": self.verdict,
            "error": None
            if self.error_kind is None
            else {"kind": self.error_kind, "message": self.error_message},
            "run_dir": str(self.run_dir),
            "seconds": round(self.seconds, 2),
            "worst": self.worst,
            "resumed": self.resumed,
            "log": str(self.log) if self.log else None,
        }


@dataclass
class MigrationResult:
    """What :func:`migrate` returns.  Truth-tests as "every model passed"."""

    models: list[ModelResult]
    root: Path
    summary_path: Path
    seconds: float

    def __bool__(self) -> bool:
        return all(self.models)

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 0 every model passed, 1 otherwise."""
        return 0 if self else 1

    def counts(self) -> dict[str, int]:
        """How many models ended with each verdict."""
        return {v: sum(m.verdict == v for m in self.models) for v in VERDICTS}


@dataclass(frozen=True)
class MigrationEvent:
    """Progress of one model, for displays: ``stage`` is ``queued``, one of :data:`STAGES`,
    ``resumed`` or ``done`` (then ``result`` is set)."""

    name: str
    stage: str
    result: ModelResult | None = None


EventCallback = Callable[[MigrationEvent], None]


def worst_per_pair(report: Mapping[str, Any]) -> dict[str, float | None]:
    """The largest ``max_abs`` per pair over a report's comparisons."""
    worst: dict[str, float | None] = {}
    for pair in PAIRS:
        values = [c.get("max_abs") for c in report.get("comparisons", []) if c["pair"] == pair]
        worst[pair] = None if not values or None in values else max(values)
    return worst


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    from pipeline.run_dir import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def _resumable(spec: ModelSpec, run_dir: Path, expected: str) -> ModelResult | None:
    report = _read_json(run_dir / REPORT_NAME)
    state = _read_json(run_dir / STATE_JSON)
    if not report or not state or report.get("verdict") not in ("pass", "fail"):
        return None
    if state.get("fingerprint") != expected:
        return None
    return ModelResult(
        name=spec.name,
        source=spec.source,
        verdict=report["verdict"],
        run_dir=run_dir,
        seconds=float(state.get("seconds", 0.0)),
        worst=worst_per_pair(report),
        resumed=True,
    )


# --------------------------------------------------------------------------- the child


def _options_from_settings(settings: Mapping[str, Any]) -> Any:
    from pipeline.api import ConvertOptions
    from pipeline.inputs import parse_input_specs

    options = ConvertOptions()
    for key, value in settings.items():
        if key == "inputs":
            options.inputs = Path(value)
        elif key == "input_ranges":
            options.input_ranges = {k: (int(v[0]), int(v[1])) for k, v in value.items()}
        elif key == "input_specs":
            options.input_specs = parse_input_specs(value)
        elif key == "output_tolerances":
            options.output_tolerances = {k: (float(v[0]), float(v[1])) for k, v in value.items()}
        elif key == "patches":
            options.patches = [Path(p) for p in value]
        elif key == "unsafe":
            options.safe_mode = not value
        else:
            setattr(options, key, value)
    return options


def _exit_with_parent() -> None:
    """Kill this process group (with the TF worker) if the migration process goes away."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def child_main(request_path: str) -> int:
    """Entry point of the per-model process: convert one model, answer in a JSON file.

    Stage names go to stdout as JSON lines; everything else this process prints goes to
    stderr (the model's log).
    """
    request = json.loads(Path(request_path).read_text())
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _exit_with_parent()

    def emit(stage: str) -> None:
        events.write(json.dumps({"stage": stage}) + "\n")
        events.flush()

    try:
        from pipeline.api import convert

        result = convert(
            request["source"],
            request["run_dir"],
            _options_from_settings(request["settings"]),
            on_stage=emit,
        )
        answer: dict[str, Any] = {"ok": True, "verdict": result.verdict}
    except Tf2TorchError as err:
        answer = {"ok": False, "kind": err.kind, "message": str(err)}
    except Exception as err:
        traceback.print_exc()
        answer = {"ok": False, "kind": "internal", "message": f"{type(err).__name__}: {err}"}
    _write_json(Path(request["answer"]), answer)
    return 0


_CHILD_CODE = (
    "import sys; from pipeline.migration import child_main; sys.exit(child_main(sys.argv[1]))"
)


# --------------------------------------------------------------------------- the scheduler


@dataclass
class _Running:
    spec: ModelSpec
    fingerprint: str
    proc: subprocess.Popen[str]
    reader: threading.Thread
    log: IO[bytes]
    started: float
    limit: float
    """Seconds this model may take."""


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _clean_leftovers(root: Path, name: str) -> None:
    """Remove staging directories a killed conversion of ``name`` left behind."""
    for pattern in (f".{name}.staging-*", f".{name}.old-*"):
        for stale in root.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    work = root / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    with (work / "lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInputError(f"another migration is running in {root}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Scheduler:
    def __init__(
        self,
        manifest: Manifest,
        root: Path,
        jobs: int,
        timeout: float,
        notify: EventCallback,
    ) -> None:
        self.manifest, self.root, self.jobs, self.timeout = manifest, root, jobs, timeout
        self.notify = notify
        self.work = root / WORK_DIR
        self.events: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self.running: dict[str, _Running] = {}
        self.results: dict[str, ModelResult] = {}
        self.started = time.perf_counter()

    # the child's environment: our package importable, TF quiet
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return env

    def start(self, spec: ModelSpec, print_: str) -> None:
        _clean_leftovers(self.root, spec.name)
        request = self.work / f"{spec.name}.request.json"
        answer = self.work / f"{spec.name}.answer.json"
        answer.unlink(missing_ok=True)
        _write_json(
            request,
            {
                "source": spec.source,
                "run_dir": str(self.root / spec.name),
                "settings": spec.settings,
                "answer": str(answer),
            },
        )
        log = (self.work / f"{spec.name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE, str(request)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=self._env(),
            start_new_session=True,  # its own process group: a timeout kills the TF worker too
        )
        reader = threading.Thread(target=self._read_stages, args=(spec.name, proc), daemon=True)
        reader.start()
        now = time.perf_counter()
        limit = spec.timeout or self.timeout
        self.running[spec.name] = _Running(spec, print_, proc, reader, log, now, limit)
        self.notify(MigrationEvent(spec.name, "starting"))

    def _read_stages(self, name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.events.put((name, str(json.loads(line)["stage"])))
        self.events.put((name, None))

    def _finish(self, run: _Running, timed_out: bool) -> ModelResult:
        name = run.spec.name
        seconds = time.perf_counter() - run.started
        run.reader.join(timeout=5)
        run.log.close()
        run_dir = self.root / name
        log_path = self.work / f"{name}.log"
        answer_path = self.work / f"{name}.answer.json"
        answer = _read_json(answer_path)
        answer_path.unlink(missing_ok=True)
        (self.work / f"{name}.request.json").unlink(missing_ok=True)

        def result(
            verdict: str, kind: str | None = None, message: str | None = None
        ) -> ModelResult:
            return ModelResult(
                name=name,
                source=run.spec.source,
                verdict=verdict,
                run_dir=run_dir,
                seconds=seconds,
                error_kind=kind,
                error_message=message,
                log=log_path,
            )

        if timed_out:
            _clean_leftovers(self.root, name)
            return result("timeout", "timeout", f"killed after the timeout of {run.limit:g} s")
        if answer is None:
            _clean_leftovers(self.root, name)
            assert run.proc.returncode is not None
            reason = death_reason(run.proc.returncode)
            return result(
                "error", "worker_crash", f"the conversion process {reason}; see {log_path}"
            )
        if not answer["ok"]:
            message = answer["message"]
            if answer["kind"] == "internal":
                message += f" (traceback in {log_path})"
            return result("error", answer["kind"], message)
        report = _read_json(run_dir / REPORT_NAME) or {}
        _write_json(
            run_dir / STATE_JSON,
            {
                "fingerprint": run.fingerprint,
                "verdict": answer["verdict"],
                "seconds": round(seconds, 2),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        converted = result(answer["verdict"])
        converted.worst = worst_per_pair(report)
        return converted

    def done(self, result: ModelResult) -> None:
        self.results[result.name] = result
        self.write_summary(complete=False)
        self.notify(MigrationEvent(result.name, "done", result))

    def poll(self) -> None:
        """Handle stage events, finished processes and timeouts (waits up to 0.2 s)."""
        with contextlib.suppress(queue.Empty):
            name, stage = self.events.get(timeout=0.2)
            while True:
                if stage is not None and name in self.running:
                    self.notify(MigrationEvent(name, stage))
                name, stage = self.events.get_nowait()
        now = time.perf_counter()
        for name, run in list(self.running.items()):
            timed_out = run.proc.poll() is None and now - run.started > run.limit
            if timed_out:
                _kill_group(run.proc)
            if run.proc.poll() is not None:
                del self.running[name]
                self.done(self._finish(run, timed_out))

    def kill_all(self) -> None:
        for run in self.running.values():
            _kill_group(run.proc)
            run.log.close()
            _clean_leftovers(self.root, run.spec.name)
        self.running.clear()

    def ordered(self) -> list[ModelResult]:
        return [self.results[m.name] for m in self.manifest.models if m.name in self.results]

    def write_summary(self, complete: bool) -> Path:
        models = self.ordered()
        summary = {
            "schema": SUMMARY_SCHEMA,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "manifest": str(self.manifest.path.absolute()),
            "root": str(self.root),
            "complete": complete,
            "seconds": round(time.perf_counter() - self.started, 2),
            "counts": {v: sum(m.verdict == v for m in models) for v in VERDICTS},
            "models": [m.to_json() for m in models],
        }
        path = self.root / SUMMARY_JSON
        _write_json(path, summary)
        return path


def migrate(
    manifest: str | Path,
    root: str | Path,
    *,
    jobs: int = 1,
    resume: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    on_event: EventCallback | None = None,
) -> MigrationResult:
    """Convert every model of ``manifest`` into ``root/<name>``; see the module docstring.

    ``jobs`` models convert at once, each in its own process; one running past ``timeout``
    seconds (or its manifest ``timeout``) is killed with its worker processes and reported as ``timeout``.  With
    ``resume``, complete runs whose fingerprint is unchanged are kept, not redone.
    ``on_event`` receives each model's progress (:class:`MigrationEvent`).

    Returns a :class:`MigrationResult` (also written to ``root/summary.json``) whatever the
    models' verdicts.  Raises :class:`ManifestError` (a :class:`BadInputError`) for an
    invalid manifest, before converting anything; :class:`BadInputError` for a bad ``jobs``,
    ``timeout`` or ``root``, or when another migration holds ``root``.  On
    ``KeyboardInterrupt`` the running conversions are killed, the summary of the finished
    ones is written, and the interrupt propagates.  Never calls ``sys.exit``.
    """
    parsed = load_manifest(manifest)
    if jobs < 1:
        raise BadInputError(f"--jobs must be at least 1, got {jobs}")
    if not timeout > 0:
        raise BadInputError(f"--timeout must be > 0 seconds, got {timeout}")
    root = Path(root).absolute()
    if root.exists() and not root.is_dir():
        raise BadInputError(f"output path {root} exists and is not a directory")
    notify = on_event or (lambda _event: None)
    with _locked(root):
        scheduler = _Scheduler(parsed, root, jobs, timeout, notify)
        pending: deque[tuple[ModelSpec, str]] = deque()
        for spec in parsed.models:
            _clean_leftovers(root, spec.name)
            print_ = fingerprint(spec)
            kept = _resumable(spec, root / spec.name, print_) if resume else None
            if kept is not None:
                scheduler.results[spec.name] = kept
                notify(MigrationEvent(spec.name, "resumed", kept))
            else:
                pending.append((spec, print_))
                notify(MigrationEvent(spec.name, "queued"))
        try:
            while pending or scheduler.running:
                while pending and len(scheduler.running) < jobs:
                    scheduler.start(*pending.popleft())
                scheduler.poll()
        finally:
            scheduler.kill_all()
            complete = not pending and len(scheduler.results) == len(parsed.models)
            summary = scheduler.write_summary(complete=complete)
    return MigrationResult(
        models=scheduler.ordered(),
        root=root,
        summary_path=summary,
        seconds=time.perf_counter() - scheduler.started,
    )
