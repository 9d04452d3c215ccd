"""Assertions for your own test suites: is this PyTorch model still the TensorFlow model?

:func:`assert_equivalent` runs a torch model and compares its outputs with TensorFlow's
reference outputs under the same rule as ``tf2torch convert`` and ``check``
(``|torch - ref| <= atol + rtol*|ref|`` per element, per-dtype default tolerances, NaN and
shape or dtype differences fail), raising :class:`AssertionError` with a message in the
spirit of :func:`torch.testing.assert_close`.

The reference is TensorFlow's outputs, *not* a live Keras model: TensorFlow must not share
a process with torch (importing torchvision after TensorFlow segfaults with the pinned
versions, and on a GPU TensorFlow takes all device memory), and a PyTorch project's tests
should not need TensorFlow installed.  So the reference is a run directory (its
``golden.npz``, written by ``tf2torch convert``), a golden ``.npz`` file, or the outputs
themselves (a dict, e.g. computed by your own TF process and saved with ``np.savez``)::

    from pipeline.testing import assert_equivalent

    def test_finetuned_model_still_matches_tf():
        model = build_my_model()                  # your nn.Module (in eval mode)
        model.load_state_dict(torch.load("ckpt.pt"))
        assert_equivalent("runs/my_model", model)   # golden inputs, the run's tolerances
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core import compare
from pipeline.core.errors import BadInputError
from pipeline.verify.check import GOLDEN, read_golden, resolve_tolerances

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class _Reference:
    outputs: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]
    description: str
    report: dict[str, Any] | None = None


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            import ml_dtypes

            return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return tensor.numpy()
    return np.asarray(value)


def _load_reference(reference: Any) -> _Reference:
    if isinstance(reference, str | Path):
        path = Path(reference)
        report_data = None
        if path.is_dir():
            import json

            report_path = path / "report.json"
            if report_path.is_file():
                report_data = json.loads(report_path.read_text())
            path = path / GOLDEN
        if not path.is_file():
            raise BadInputError(f"reference {reference} is neither a run directory nor an .npz")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.files)
                plain = {k: npz[k] for k in keys}
            if any(k.startswith("output/") for k in keys):
                golden = read_golden(path)
                return _Reference(golden.outputs, golden.inputs, str(path), report_data)
            return _Reference(plain, {}, str(path), report_data)
        raise BadInputError(f"reference {reference} is not an .npz file")
    if isinstance(reference, Mapping):
        return _Reference(
            {str(k): _to_numpy(v) for k, v in reference.items()}, {}, "the given outputs"
        )
    if isinstance(reference, np.ndarray | torch.Tensor):
        return _Reference({"output": _to_numpy(reference)}, {}, "the given output")
    raise TypeError(
        "reference must be a run directory, a golden .npz path, a dict of outputs or an "
        f"array, not {type(reference).__name__}"
    )


def _device_of(model: Any) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return torch.device("cpu")


def _positional_inputs(
    inputs: Any, ref: _Reference, device: torch.device
) -> tuple[list[torch.Tensor], bool]:
    """The model's positional arguments; the flag says whether the golden inputs were used."""
    used_golden = inputs is None
    if inputs is None:
        if not ref.inputs:
            raise ValueError(f"{ref.description} holds no inputs: pass inputs=")
        values: list[Any] = list(ref.inputs.values())
    elif isinstance(inputs, Mapping):
        names = list(ref.inputs) if set(ref.inputs) == set(inputs) else list(inputs)
        values = [inputs[n] for n in names]
    elif isinstance(inputs, np.ndarray | torch.Tensor):
        values = [inputs]
    elif isinstance(inputs, Sequence):
        values = list(inputs)
    else:
        raise TypeError(
            "inputs must be a dict of arrays (in the model's input order), a sequence of "
            f"arrays or one array, not {type(inputs).__name__}"
        )
    tensors = [
        (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))).to(device)
        for v in values
    ]
    return tensors, used_golden


def _model_outputs(result: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    if isinstance(result, Mapping):
        return {str(k): _to_numpy(v) for k, v in result.items()}
    tensors = list(result) if isinstance(result, list | tuple) else [result]
    if len(tensors) != len(names):
        raise AssertionError(
            f"the torch model returned {len(tensors)} output(s), the reference has "
            f"{len(names)} ({', '.join(names)})"
        )
    return {name: _to_numpy(t) for name, t in zip(names, tensors, strict=True)}


def _fmt_index(index: tuple[int, ...] | None) -> str:
    return "()" if not index else "(" + ", ".join(str(i) for i in index) + ")"


def _tiny(dtype: np.dtype[Any]) -> float:
    """The floor of ``|reference|`` in relative errors, as :mod:`pipeline.core.compare` uses it."""
    return float(np.finfo(dtype).tiny) if dtype.kind == "f" else 1.0


def _in_training_mode(model: Any) -> bool:
    """Whether a layer that behaves differently in training (dropout, batch norm) is in it."""
    if not isinstance(model, torch.nn.Module):
        return False
    kinds = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)
    return any(m.training and isinstance(m, kinds) for m in model.modules())


def _worst_relative(ref: np.ndarray, other: np.ndarray) -> tuple[float, tuple[int, ...]] | None:
    """The largest |a - b| / max(|b|, tiny) over finite elements and where it is."""
    if ref.shape != other.shape or ref.size == 0:
        return None
    b = ref.astype(np.float64)
    a = other.astype(np.float64)
    tiny = _tiny(ref.dtype)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        rel = np.abs(a - b) / np.maximum(np.abs(b), tiny)
    rel = np.where(np.isfinite(rel), rel, -1.0)
    flat = int(np.argmax(rel))
    if rel.flat[flat] < 0:
        return None
    return float(rel.flat[flat]), tuple(int(i) for i in np.unravel_index(flat, ref.shape))


def _message(
    c: compare.OutputComparison, ref: np.ndarray, other: np.ndarray | None, description: str
) -> str:
    lines = [f"torch output {c.output!r} is not equivalent to {description}:"]
    if other is None:
        lines.append("  the torch model did not return it")
        return "\n".join(lines)
    if c.mismatch_fraction is not None:
        mismatched = round(c.mismatch_fraction * ref.size)
        lines.append(
            f"  Mismatched elements: {mismatched} / {ref.size} ({100 * c.mismatch_fraction:.1f}%)"
        )
    if (
        c.max_abs is not None
        and c.worst_index is not None
        and c.worst_ref is not None
        and c.worst_other is not None
    ):
        wr, wo = float(c.worst_ref), float(c.worst_other)
        rel = abs(wo - wr) / max(abs(wr), _tiny(ref.dtype))
        lines.append(
            f"  Greatest absolute difference: {c.max_abs:.6g} at index "
            f"{_fmt_index(c.worst_index)}: reference {c.worst_ref!r}, torch {c.worst_other!r} "
            f"(relative {rel:.6g}; up to {c.atol + c.rtol * abs(wr):.6g} allowed there)"
        )
    worst_rel = _worst_relative(ref, other)
    if worst_rel is not None:
        value, index = worst_rel
        lines.append(
            f"  Greatest relative difference: {value:.6g} at index {_fmt_index(index)}: "
            f"reference {ref[index].item()!r}, torch {other[index].item()!r}"
        )
    if c.note:
        lines.append(f"  Note: {c.note}")
    lines.append(
        f"  Rule: |torch - reference| <= atol + rtol * |reference| with atol={c.atol:g}, "
        f"rtol={c.rtol:g}"
        + (
            f" (from the run's float32 noise floor {c.noise_floor:.3g})"
            if c.noise_floor is not None
            else ""
        )
    )
    return "\n".join(lines)


def assert_equivalent(
    tf_model_or_golden: str | Path | Mapping[str, ArrayLike] | ArrayLike,
    torch_model: torch.nn.Module | Callable[..., Any],
    inputs: Mapping[str, ArrayLike] | Sequence[ArrayLike] | ArrayLike | None = None,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    output_tolerances: Mapping[str, tuple[float, float]] | None = None,
    msg: str | None = None,
) -> list[compare.OutputComparison]:
    """Assert that ``torch_model`` reproduces TensorFlow's reference outputs.

    ``tf_model_or_golden`` is TensorFlow's side (never a live Keras model; see the module
    docstring): a run directory (its ``golden.npz``; its ``report.json`` tolerances become
    the defaults), a golden ``.npz`` (keys ``input/<name>``/``output/<name>``, or plain keys
    that are all outputs), a dict output name → array, or one array for a one-output model.

    ``inputs`` are the model's positional arguments: ``None`` for the golden inputs (a run
    directory or golden ``.npz`` only), a dict (in the model's input order, or in the golden
    order when it has the same names), a sequence, or one array; NumPy arrays or tensors.
    They are moved to the model's device.  The model runs under ``torch.no_grad()`` as it is
    (call ``.eval()`` first); it may return one tensor, a tuple/list in the reference's output
    order, or a dict keyed by output name.

    ``atol``/``rtol`` replace the per-dtype defaults (float32 1e-4, float16/bfloat16 1e-2,
    float64 1e-7; integers and booleans exact) for every floating output;
    ``output_tolerances`` maps an output name to ``(atol, rtol)``.  ``msg`` heads the error.

    Returns the comparisons when every output matches; raises :class:`AssertionError` naming,
    per failing output, how many elements differ out of how many, the worst element's index,
    both values and its absolute and relative error.
    """
    ref = _load_reference(tf_model_or_golden)
    if ref.report is not None:
        tolerances = resolve_tolerances(ref.report, atol, rtol, output_tolerances)
    else:
        tolerances = compare.Tolerances(
            atol,
            rtol,
            {k: compare.Tolerance(*v) for k, v in (output_tolerances or {}).items()},
        )
    args, used_golden = _positional_inputs(inputs, ref, _device_of(torch_model))
    with torch.no_grad():
        result = torch_model(*args)
    outputs = _model_outputs(result, list(ref.outputs))

    comparisons = []
    failures = []
    for name, expected in ref.outputs.items():
        tol = tolerances.for_output(name, expected.dtype)
        actual = outputs.get(name)
        if actual is None:
            c = compare.missing_output("reference-torch", name, tol)
        else:
            c = compare.compare_pair("reference-torch", name, expected, actual, tol)
        noise = tolerances.noise_for(name, expected.dtype)
        c.noise_floor = noise.noise if noise is not None else None
        comparisons.append(c)
        if not c.passed:
            failures.append(_message(c, expected, actual, ref.description))
    if failures:
        head = [msg] if msg else []
        if _in_training_mode(torch_model):
            head.append("(dropout or batch norm layers are in training mode: call .eval() first?)")
        if not used_golden and ref.inputs:
            head.append("(inputs were given: are they the ones the reference outputs came from?)")
        raise AssertionError("\n".join([*head, *failures]))
    return comparisons
