"""ONNX's node test cases, each with the op it tests and whether we can run it at all.

A case's op is the op type of its one node; a ``*_expanded*`` case (the op's function body
written out as several nodes) counts for the op of the case it expands
(``test_softmax_axis_0_expanded`` → ``Softmax``).  :func:`refusal` says why a case cannot be
run here: an op with no converter in the importer, or a type torch cannot hold.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto

MAX_IR_VERSION = 13
"""The highest IR version ONNX Runtime 1.31 reads; onnx 1.23 writes 14 by default."""

DataSet = tuple[list[Any], list[Any]]
"""(inputs, expected outputs) of one run of a case, as ONNX's test generator made them."""


@dataclass
class Case:
    """One ONNX node test case: ``name`` (``test_relu``), the ``op`` it counts for, its
    ``model`` and its ``data_sets``."""

    name: str
    op: str
    model: onnx.ModelProto
    data_sets: list[DataSet]


_UNHOLDABLE: dict[int, str] = {
    TensorProto.STRING: "string",
    TensorProto.COMPLEX64: "complex64",
    TensorProto.COMPLEX128: "complex128",
    TensorProto.FLOAT8E4M3FN: "float8e4m3fn",
    TensorProto.FLOAT8E4M3FNUZ: "float8e4m3fnuz",
    TensorProto.FLOAT8E5M2: "float8e5m2",
    TensorProto.FLOAT8E5M2FNUZ: "float8e5m2fnuz",
    TensorProto.FLOAT8E8M0: "float8e8m0",
    TensorProto.FLOAT4E2M1: "float4e2m1",
    TensorProto.UINT4: "uint4",
    TensorProto.INT4: "int4",
    TensorProto.UINT2: "uint2",
    TensorProto.INT2: "int2",
}
"""ONNX element types torch has no tensor for that onnx2torch could run (torch's float8
types exist but have almost no operators, and numpy has none of these)."""

_ARITHMETIC_FREE: dict[int, str] = {
    TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64",
}
"""Types torch stores but cannot compute with (``add``, ``maximum``, ``gt`` are not
implemented for them on the CPU in torch 2.14)."""


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _base_name(name: str) -> str:
    return re.sub(r"_expanded(_ver\d+)?$", "", name)


def _data_sets(raw: Any) -> list[DataSet]:
    return [(list(inputs), list(outputs)) for inputs, outputs in (raw or [])]


def collect(ops: Iterable[str] | None = None) -> list[Case]:
    """Every ONNX node test case (``collect_testcases()``), in ONNX's order, each with its op;
    only those whose op is in ``ops`` when given."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators' own overflow/divide warnings
        raw = collect_testcases()
    main_op: dict[str, str] = {}
    raw = [c for c in raw if c.model is not None]
    for case in raw:
        assert case.model is not None
        nodes = list(case.model.graph.node)
        if len(nodes) == 1:
            main_op[case.name] = _op_key(nodes[0])
    wanted = set(ops) if ops is not None else None
    cases = []
    for case in raw:
        assert case.model is not None
        op = main_op.get(case.name) or main_op.get(_base_name(case.name))
        if op is None:  # never seen with onnx 1.23; keep the case, named by its first node
            nodes = list(case.model.graph.node)
            op = _op_key(nodes[0]) if nodes else "<empty graph>"
        if wanted is None or op in wanted:
            cases.append(Case(case.name, op, case.model, _data_sets(case.data_sets)))
    return cases


def _describe_type(value: onnx.ValueInfoProto) -> str | None:
    """Why torch cannot hold the graph input or output ``value``, or None if it can."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return f"{value.name or '?'} is a{'n' if (kind or 'x')[0] in 'aeiou' else ''} {kind}"
    elem = value.type.tensor_type.elem_type
    if elem in _UNHOLDABLE:
        return f"{value.name} is {_UNHOLDABLE[elem]}"
    if elem in _ARITHMETIC_FREE:
        return f"{value.name} is {_ARITHMETIC_FREE[elem]} (torch stores it but has no arithmetic for it)"
    return None


def unsupported_types(model: onnx.ModelProto, data_sets: Sequence[DataSet]) -> list[str]:
    """Each graph input or output torch cannot hold, as ``name is type`` (empty: all fine)."""
    reasons = []
    for value in [*model.graph.input, *model.graph.output]:
        reason = _describe_type(value)
        if reason:
            reasons.append(reason)
    for inputs, outputs in data_sets:
        for value in [*inputs, *outputs]:
            if value is None or isinstance(value, list | dict):
                reasons.append(f"a data set holds a {type(value).__name__}")
    return sorted(set(reasons))


PIPELINE_OPSET = 17
"""The opset the pipeline's export stage asks tf2onnx for by default: a case at another opset
whose op has no converter there is converted to this one (:func:`prepare`)."""


@dataclass
class Prepared:
    """What :func:`prepare` made of a case: the ``model`` to run (IR version at most
    :data:`MAX_IR_VERSION`) and the ``opset`` it is at, or the ``refusal`` that says why
    it is not run; ``note`` says when the model was converted from another opset."""

    model: onnx.ModelProto | None
    opset: int
    refusal: str = ""
    note: str = ""


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _no_converter(model: onnx.ModelProto) -> str:
    from pipeline.to_torch.importer import find_unsupported_ops

    unsupported = find_unsupported_ops(model)
    if not unsupported:
        return ""
    opsets = {o.domain or "": o.version for o in model.opset_import}
    shown = []
    for op in sorted(unsupported):
        domain = op.split("::")[0] if "::" in op else ""
        shown.append(f"{op} at opset {opsets.get(domain, '?')}")
    return f"no converter ({', '.join(shown)})"


def _converter_message(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    match = re.search(r"Assertion `?(.*)", text)
    text = match.group(1) if match else text
    return text if len(text) <= 120 else text[:117] + "..."


def _restamped(model: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto | None, str]:
    """``model`` with its default-domain opset simply set to ``opset``, if ONNX's full checker
    (shape inference included) accepts it there; else None and the checker's complaint.

    For an op whose later versions only admit new types, the version converter often has no
    adapter although the node means the same at ``opset``.  An attribute *value* whose
    meaning changed passes the checker, so a re-stamped case that fails in the import stage
    is refused, not counted as a finding (:func:`conformance.check.run_case`); a numeric comparison still
    guards every pass.
    """
    restamped = onnx.ModelProto()
    restamped.CopyFrom(model)
    for entry in restamped.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    try:
        onnx.checker.check_model(restamped, full_check=True)
    except Exception as exc:
        return None, _converter_message(exc)
    return restamped, ""


def prepare(case: Case, opset: int = PIPELINE_OPSET) -> Prepared:
    """The model to run for ``case``, or why it is refused.

    Refused: a node no converter handles (:func:`~pipeline.to_torch.importer.find_unsupported_ops`)
    at the case's opset, unless ONNX's version converter can bring the model to ``opset``
    (the pipeline's) where every node has one -- ONNX writes each case at the newest opset
    that changed the op, often only to admit new types, while our models come from tf2onnx
    at ``opset`` -- or, when the converter has no adapter, by setting the opset to ``opset``
    if ONNX's checker accepts the model there (:func:`_restamped`); a graph input or output
    torch cannot hold (:func:`unsupported_types`); no data sets.
    """
    from onnx import version_converter

    model = with_ir_version(case.model)
    at = _default_opset(model)
    reason = _no_converter(model)
    note = ""
    converted: onnx.ModelProto | None = None
    restamp = False
    if reason and at != opset:
        try:
            converted = with_ir_version(version_converter.convert_version(model, opset))
        except Exception as exc:  # the converter asserts in C++; any failure means "cannot"
            converted, message = _restamped(model, opset)
            if converted is None:
                reason += (
                    f"; not convertible to opset {opset} ({_converter_message(exc)}; "
                    f"re-stamped: {message})"
                )
            else:
                restamp = True
        if converted is not None:
            still = _no_converter(converted)
            if still:
                reason += f"; at opset {opset} still {still}"
            else:
                how = "re-stamped" if restamp else "converted"
                model, reason, note = converted, "", f"{how} from opset {at}"
                at = opset
    if reason:
        return Prepared(None, at, refusal=reason)
    types = unsupported_types(model, case.data_sets)
    if types:
        return Prepared(None, at, refusal=f"type torch cannot hold ({'; '.join(types)})")
    if not case.data_sets:
        return Prepared(None, at, refusal="no data sets")
    return Prepared(model, at, note=note)


def with_ir_version(model: onnx.ModelProto, limit: int = MAX_IR_VERSION) -> onnx.ModelProto:
    """A copy of ``model`` whose IR version is at most ``limit``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = min(copy.ir_version, limit)
    return copy


def to_numpy(value: Any) -> np.ndarray:
    """A test input or expected output as a numpy array (``TensorProto`` → its values;
    bfloat16 comes back as ``ml_dtypes.bfloat16``)."""
    if isinstance(value, TensorProto):
        return onnx.numpy_helper.to_array(value)
    return np.asarray(value)


def to_tensor(value: Any) -> torch.Tensor:
    """A test input as a torch tensor of the same dtype (bfloat16 included)."""
    # np.ascontiguousarray makes a 0-d array 1-d; np.array(copy) keeps the rank.
    array = np.array(to_numpy(value), copy=True, order="C")
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(array.copy())
