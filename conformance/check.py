"""One conformance case through the importer and the code generator.

:func:`run_case` imports the case's model (:func:`~pipeline.to_torch.importer.import_onnx`),
runs it on every data set and compares with ONNX's expected outputs, then writes the
``torch_model`` package (:func:`~pipeline.to_torch.codegen.emit_package`), loads it afresh
(:func:`~pipeline.to_torch.codegen.load_generated`), runs and compares it again.

Outcomes (:data:`OUTCOMES`): ``pass``; ``pass-constant-inputs`` when the case as ONNX wrote
it (every input a run-time tensor) fails to import or generate code but passes with every
input but the first made a constant, as a Keras export has weights, shapes and axes
(:func:`constant_inputs`; the reason keeps the as-written failure).  Each of the two stages fails either with no working module
(``fail-import``: converting or running the imported module raised; ``fail-codegen``: no
readable form, or the generated package did not load or run) or with wrong outputs
(``fail-numeric-import``, ``fail-numeric-code``).  The reason is one line and starts with
the step that failed (``convert:``, ``forward:``, ``emit:``, ``load:``, ``output 0:``).

Tolerances (:data:`TOLERANCES`): floats pass when ``|actual - expected| <= atol + rtol *
|expected|`` element-wise (NaN equals NaN, infinities must match exactly); integers and
bool must be equal.  Output count, shapes and dtypes must match exactly.
"""

from __future__ import annotations

import contextlib
import io
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
import torch

from conformance.cases import PIPELINE_OPSET, Case, DataSet, prepare, to_numpy, to_tensor

PASS = "pass"
PASS_CONSTANT = "pass-constant-inputs"
FAIL_IMPORT = "fail-import"
FAIL_NUMERIC_IMPORT = "fail-numeric-import"
FAIL_CODEGEN = "fail-codegen"
FAIL_NUMERIC_CODE = "fail-numeric-code"
REFUSED = "refused"
OUTCOMES = (PASS, PASS_CONSTANT, FAIL_IMPORT, FAIL_NUMERIC_IMPORT, FAIL_CODEGEN, FAIL_NUMERIC_CODE, REFUSED)
FAILURES = (FAIL_IMPORT, FAIL_NUMERIC_IMPORT, FAIL_CODEGEN, FAIL_NUMERIC_CODE)

TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-9),
    "float32": (1e-4, 1e-5),
    "float16": (1e-3, 1e-3),
    "bfloat16": (1e-2, 1e-2),
}
"""Floating dtype → (rtol, atol).  float32's is the one that matters; float16 allows about
one ulp, bfloat16 about one ulp of its 8-bit mantissa."""

DEFAULT_TIMEOUT = 60.0
"""Seconds one case may take (import, runs, codegen and load together)."""


@dataclass
class CaseResult:
    """How one case ended: ``outcome`` (one of :data:`OUTCOMES`) and a one-line ``reason``
    (empty for a pass)."""

    name: str
    op: str
    outcome: str
    reason: str = ""
    seconds: float = 0.0
    opset: int = 0
    """The default-domain opset the case ran (or was refused) at."""
    note: str = ""
    """``converted from opset N`` when ONNX's version converter changed the model's opset."""

    def to_json(self) -> dict[str, Any]:
        """The case's entry in ``conformance.json``."""
        return asdict(self)


class CaseTimeout(Exception):
    """The case ran longer than its time limit."""


class _Failed(Exception):
    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (shortened to ``limit`` characters)."""
    lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return np.dtype(dtype).name


def _as_float_numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        return tensor.detach().float().cpu().numpy()
    return tensor.detach().cpu().numpy()


def compare(actual: Any, expected: Sequence[Any]) -> str | None:
    """None when ``actual`` (a tensor, or a tuple/list of them) matches ``expected`` (one
    array per graph output) in count, shape, dtype and value; else the first difference as
    one line (``output 0: 3 of 60 values differ, max abs err 0.5 at ...``)."""
    outputs = list(actual) if isinstance(actual, tuple | list) else [actual]
    if len(outputs) != len(expected):
        return f"{len(outputs)} outputs, expected {len(expected)}"
    for i, (out, exp) in enumerate(zip(outputs, expected, strict=True)):
        want = to_numpy(exp)
        if not isinstance(out, torch.Tensor):
            return f"output {i}: a {type(out).__name__}, expected a tensor"
        got_dtype, want_dtype = _dtype_name(out.dtype), _dtype_name(want.dtype)
        if got_dtype != want_dtype:
            return f"output {i}: dtype {got_dtype}, expected {want_dtype}"
        if tuple(out.shape) != tuple(want.shape):
            return f"output {i}: shape {tuple(out.shape)}, expected {tuple(want.shape)}"
        got = _as_float_numpy(out)
        if want_dtype in TOLERANCES:
            rtol, atol = TOLERANCES[want_dtype]
            g, w = got.astype(np.float64), want.astype(np.float64)
            with np.errstate(invalid="ignore"):
                ok = np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
            if not ok.all():
                bad = int((~ok).sum())
                with np.errstate(invalid="ignore"):
                    err = np.where(ok, 0.0, np.abs(g - w))
                flat = int(np.argmax(np.nan_to_num(err, nan=np.inf)))
                where = tuple(int(k) for k in np.unravel_index(flat, w.shape))
                return (
                    f"output {i}: {bad} of {w.size} values differ (rtol {rtol:g}, atol {atol:g}); "
                    f"worst at {where}: {float(g[where])!r} vs expected {float(w[where])!r}"
                )
        elif not np.array_equal(got, want):
            bad_mask = got != want
            bad = int(bad_mask.sum())
            first: tuple[int, ...] = (
                tuple(int(k) for k in np.argwhere(bad_mask)[0]) if bad_mask.ndim else ()
            )
            return (
                f"output {i}: {bad} of {want.size} values differ (exact {want_dtype}); "
                f"first at {first}: {got[first].item()!r} vs expected {want[first].item()!r}"
            )
    return None


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CaseTimeout` in this thread after ``seconds`` (``signal.alarm``; only
    in the main thread of a process -- elsewhere, or with None, no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise CaseTimeout(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run(module: torch.nn.Module, inputs: Sequence[Any]) -> Any:
    # An fx GraphModule that raises prints the generated code's frame to stderr first; the
    # case's reason already says what happened.
    # ONNX's expected outputs are inference ones (Dropout off, BatchNorm on its running
    # statistics); an imported GraphModule starts in training mode like any nn.Module.
    module.eval()
    with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
        return module(*[to_tensor(x) for x in inputs])


def _check_runs(
    data_sets: Sequence[DataSet],
    module: torch.nn.Module,
    crashed: str,
    wrong: str,
    stage: Callable[[str], None],
) -> None:
    for k, (inputs, expected) in enumerate(data_sets):
        label = f" (data set {k})" if len(data_sets) > 1 else ""
        stage(f"{crashed}: forward")
        try:
            actual = _run(module, inputs)
        except CaseTimeout:
            raise
        except Exception as exc:
            raise _Failed(crashed, f"forward{label}: {one_line(exc)}") from exc
        difference = compare(actual, expected)
        if difference:
            raise _Failed(wrong, f"{difference}{label}")


def constant_inputs(
    model: onnx.ModelProto, data_sets: Sequence[DataSet]
) -> tuple[onnx.ModelProto, list[DataSet], list[str]] | None:
    """The case with every graph input but the first made an initializer holding its test
    value -- as a Keras export has them: weights, shapes, axes, pads, split sizes are
    constants there -- and its data sets cut to the first input; with the names made
    constant.  None when the graph has one input, or the data sets give another input
    different values."""
    names = [v.name for v in model.graph.input]
    if len(names) < 2 or not data_sets:
        return None
    values = [to_numpy(x) for x in data_sets[0][0]]
    if len(values) != len(names):
        return None
    for inputs, _ in data_sets[1:]:
        if any(not np.array_equal(to_numpy(a), b) for a, b in zip(inputs[1:], values[1:], strict=True)):
            return None
    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    del frozen.graph.input[1:]
    for name, value in zip(names[1:], values[1:], strict=True):
        frozen.graph.initializer.append(onnx.numpy_helper.from_array(value, name))
    return frozen, [([inputs[0]], list(expected)) for inputs, expected in data_sets], names[1:]


def _convert_and_check(
    model: onnx.ModelProto, data_sets: Sequence[DataSet], stage: Callable[[str], None]
) -> None:
    from pipeline.to_torch.codegen import CodegenFailed, emit_package, load_generated
    from pipeline.to_torch.importer import import_onnx

    stage(f"{FAIL_IMPORT}: convert")
    try:
        module = import_onnx(model)
    except CaseTimeout:
        raise
    except Exception as exc:
        raise _Failed(FAIL_IMPORT, f"convert: {one_line(exc)}") from exc
    _check_runs(data_sets, module, FAIL_IMPORT, FAIL_NUMERIC_IMPORT, stage)

    stage(f"{FAIL_CODEGEN}: emit")
    with tempfile.TemporaryDirectory(prefix="conformance_") as tmp:
        try:
            package = emit_package(
                module,
                [],
                tmp,
                input_names=[v.name for v in model.graph.input],
                output_names=[v.name for v in model.graph.output],
                example_inputs=[to_tensor(x) for x in data_sets[0][0]],
                layers=(),
            )
        except CaseTimeout:
            raise
        except CodegenFailed as exc:
            raise _Failed(FAIL_CODEGEN, f"emit: {one_line(exc)}") from exc
        except Exception as exc:
            raise _Failed(FAIL_CODEGEN, f"emit raised {one_line(exc)}") from exc
        stage(f"{FAIL_CODEGEN}: load")
        try:
            generated = load_generated(package.path)
        except CaseTimeout:
            raise
        except Exception as exc:
            raise _Failed(FAIL_CODEGEN, f"load: {one_line(exc)}") from exc
        _check_runs(data_sets, generated, FAIL_CODEGEN, FAIL_NUMERIC_CODE, stage)


def _no_stage(_stage: str) -> None:
    pass


def run_case(
    case: Case,
    timeout: float | None = DEFAULT_TIMEOUT,
    stage: Callable[[str], None] = _no_stage,
    opset: int = PIPELINE_OPSET,
) -> CaseResult:
    """Check ``case``; never raises (any exception becomes the case's failure).

    A refused case (:func:`conformance.cases.prepare`; ``opset`` is the one it may be
    converted to) is not run.  ``stage`` is told
    ``"<outcome if it fails now>: <step>"`` before each step, for a driver that has to
    name the step a dead worker was in.
    """
    start = time.perf_counter()
    current = [f"{FAIL_IMPORT}: screening"]
    at, note = 0, ""

    def step(text: str) -> None:
        current[0] = text
        stage(text)

    try:
        with warnings.catch_warnings(), time_limit(timeout):
            warnings.simplefilter("ignore")
            prepared = prepare(case, opset)
            at, note = prepared.opset, prepared.note
            if prepared.model is None:
                return CaseResult(case.name, case.op, REFUSED, prepared.refusal, opset=at)
            try:
                _convert_and_check(prepared.model, case.data_sets, step)
                outcome, reason = PASS, ""
            except _Failed as failed:
                variant = constant_inputs(prepared.model, case.data_sets)
                if failed.outcome not in (FAIL_IMPORT, FAIL_CODEGEN) or variant is None:
                    raise
                # As written, every input is a run-time tensor; retry as a Keras export
                # has them (weights, shapes, axes constant): a pass there is a pass with a
                # note, a failure there is the case's failure.
                as_written = f"as written: {failed.outcome}: {failed.reason}"
                frozen, data_sets, names = variant
                shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
                made = f"inputs {shown} made constant"
                try:
                    _convert_and_check(frozen, data_sets, step)
                except _Failed:
                    note = "; ".join(n for n in (note, made, as_written) if n)
                    raise
                note = "; ".join(n for n in (note, made) if n)
                outcome, reason = PASS_CONSTANT, as_written
    except _Failed as failed:
        outcome, reason = failed.outcome, failed.reason
    except CaseTimeout as exc:
        outcome, _, where = current[0].partition(": ")
        reason = f"{where}: {exc}"
    except BaseException as exc:  # a case must never end the run (SystemExit included)
        if isinstance(exc, KeyboardInterrupt):
            raise
        outcome, _, where = current[0].partition(": ")
        reason = f"{where}: {one_line(exc)}"
    if outcome in (FAIL_IMPORT, FAIL_NUMERIC_IMPORT) and note.startswith("re-stamped"):
        # Nothing checked that the op means the same at the re-stamped opset (an attribute
        # value added later passes the checker), so an import failure is no finding.  Once
        # the imported module matched ONNX's outputs, the meaning is settled: a codegen
        # failure after that is one.
        reason = (
            f"fails only re-stamped to opset {at}, where the op may mean something else "
            f"({outcome}: {reason})"
        )
        outcome = REFUSED
    seconds = round(time.perf_counter() - start, 3)
    return CaseResult(case.name, case.op, outcome, reason, seconds, opset=at, note=note)
