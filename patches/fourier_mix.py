"""Fourier mixing (F-Net): ``y = real(fft2(x))`` of a real ``x`` over its last two axes.

TensorFlow spells it ``Real(FFT2D(Complex(x, 0)))`` (keras-hub's ``FNetEncoder``, Keras's
``ops.fft2`` on ``(x, zeros_like(x))``) or ``Real(FFT2D(Cast(x, complex)))``
(``tf.math.real(tf.signal.fft2d(tf.cast(x, tf.complex64)))``).  tf2onnx converts none of the
three ops: they stay in the raw graph as default-domain ``Complex``/``FFT2D``/``Real`` nodes
ONNX does not define.

**Match** (anchored on ``Real``, checked backwards; op types, constants and dtypes, never
names; ``Identity`` nodes between the links are skipped):

- ``Real(f)`` with ``f = FFT2D(c)`` (``FFT2D`` transforms the innermost two axes);
- ``c = Complex(x, zero)`` where ``zero`` is ``ConstantOfShape(Shape(x))`` filled with 0
  (``tf.zeros_like(x)``) or a constant of zeros that cannot broadcast ``x`` up (a scalar,
  or a shape whose dims are 1 or ``x``'s); or ``c = Cast(x, to=complex)``;
- ``x`` is float32 (``c`` complex64) or float64 (``c`` complex128);
- the ``Complex``/``Cast`` and ``FFT2D`` outputs are used only inside the match (an
  ``FFT2D`` whose imaginary part is also read is left alone) and are not graph outputs.

Nothing needs ``x``'s shape: downstream of an unconverted FFT, shape inference knows none.

**ONNX form.**  ``tf2torch.FourierMix(x)``, a model-local function over opset 17's ``DFT``:
``x`` gets a trailing dim of 1 (a real signal), ``DFT`` (``onesided = 0``) runs along the
last and then the second-to-last axis of ``x`` (giving ``[..., 2]``: real, imaginary), and
the real part is sliced out and squeezed.  From opset 20 ``DFT`` takes its axis as an input.

**Torch form.**  :class:`FourierMix` (no weights): ``torch.fft.fft2(x, dim=(-2, -1)).real``,
written into ``torch_model/model.py`` as that expression by its ``code_form`` method (a
weightless module is no attribute of the generated class, so it is not one of
``codegen.modules.CUSTOM_CLASSES``; a patch, part of the fixup stage, never imports the
import stage's registry).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.passes import custom_ops
from pipeline.passes.base import PassResult

OP_TYPE = "FourierMix"
MIN_OPSET = 17  # DFT
_AXIS_INPUT_OPSET = 20  # DFT-20 takes `axis` as its third input

_COMPLEX_OF = {ir.DataType.FLOAT: ir.DataType.COMPLEX64, ir.DataType.DOUBLE: ir.DataType.COMPLEX128}


class FourierMix(nn.Module):
    """The real part of the 2-D discrete Fourier transform over the last two axes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(x, dim=(-2, -1)).real

    def code_form(self, args: list[str]) -> str:
        """The code form in ``torch_model/model.py``: the expression itself (no weights, so
        no attribute of the generated class)."""
        return f"torch.fft.fft2({args[0]}, dim=(-2, -1)).real"


@custom_ops.register_converter(OP_TYPE)
def convert_fourier_mix(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """``tf2torch::FourierMix(x)`` → :class:`FourierMix`."""
    del graph
    return OperationConverterResult(
        torch_module=FourierMix(),
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )


def _function(opset: int) -> onnx.FunctionProto:
    if opset >= _AXIS_INPUT_OPSET:
        dft = """
            hidden_axis = Constant <value = int64 {-2}> ()
            seq_axis = Constant <value = int64 {-3}> ()
            d1 = DFT <onesided = 0> (x1, , hidden_axis)
            d2 = DFT <onesided = 0> (d1, , seq_axis)"""
    else:
        dft = """
            d1 = DFT <axis = -2, onesided = 0> (x1)
            d2 = DFT <axis = -3, onesided = 0> (d1)"""
    return custom_ops.parse_function(
        f"""
        <domain: "{custom_ops.DOMAIN}", opset_import: ["" : {opset}]>
        {OP_TYPE} (x) => (y) {{
            last = Constant <value = int64[1] {{-1}}> ()
            zero = Constant <value = int64[1] {{0}}> ()
            one = Constant <value = int64[1] {{1}}> ()
            x1 = Unsqueeze(x, last){dft}
            re = Slice(d2, zero, one, last)
            y = Squeeze(re, last)
        }}
        """
    )


# -- matching ------------------------------------------------------------------------------


def _producer(value: ir.Value | None, op_type: str, skipped: list[ir.Node]) -> ir.Node | None:
    """The default-domain ``op_type`` node producing ``value`` through any ``Identity``
    nodes (appended to ``skipped``), or None."""
    node = value.producer() if value is not None else None
    while node is not None and node.op_type == "Identity" and node.domain in ("", "ai.onnx"):
        skipped.append(node)
        node = node.inputs[0].producer() if node.inputs[0] is not None else None
    if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx"):
        return None
    return node


def _source(value: ir.Value | None) -> ir.Value | None:
    """``value`` with any ``Identity`` nodes in front of it looked through."""
    node = value.producer() if value is not None else None
    while value is not None and node is not None and node.op_type == "Identity":
        value = node.inputs[0]
        node = value.producer() if value is not None else None
    return value


def _is_zero_like(zero: ir.Value | None, x: ir.Value, nodes: list[ir.Node]) -> bool:
    """Whether ``zero`` is zeros of ``x``'s shape (or one that cannot broadcast it up)."""
    const = custom_ops.const_array(zero)
    if const is not None:
        if np.any(const != 0):
            return False
        if const.ndim == 0:
            return True
        x_dims = custom_ops.dims(x)
        if x_dims is None or const.ndim > len(x_dims):
            return False
        return all(
            c == 1 or c == d for c, d in zip(const.shape, x_dims[-const.ndim :], strict=True)
        )
    fill = _producer(zero, "ConstantOfShape", nodes)
    if fill is None:
        return False
    value = fill.attributes.get("value")
    if value is not None and np.any(value.as_tensor().numpy() != 0):
        return False
    shape = _producer(fill.inputs[0], "Shape", nodes)
    if shape is None or "start" in shape.attributes or "end" in shape.attributes:
        return False
    nodes.extend([fill, shape])
    return _source(shape.inputs[0]) is _source(x)


def _match(real: ir.Node) -> tuple[ir.Value, list[ir.Node]] | None:
    """``(x, nodes)`` if ``real`` ends a Fourier mixing chain (module docstring), else None."""
    if real.op_type != "Real" or real.domain not in ("", "ai.onnx") or len(real.inputs) != 1:
        return None
    nodes: list[ir.Node] = [real]
    fft = _producer(real.inputs[0], "FFT2D", nodes)
    if fft is None or len(fft.inputs) != 1:
        return None
    nodes.append(fft)
    skipped: list[ir.Node] = []  # Identity nodes between FFT2D and Complex/Cast
    to_complex = _producer(fft.inputs[0], "Complex", skipped)
    if to_complex is not None:
        if len(to_complex.inputs) != 2 or to_complex.inputs[0] is None:
            return None
        x, zero = to_complex.inputs
        assert x is not None
        if not _is_zero_like(zero, x, nodes):
            return None
        complex_type = _COMPLEX_OF.get(x.dtype) if x.dtype is not None else None
    else:
        skipped.clear()
        to_complex = _producer(fft.inputs[0], "Cast", skipped)
        if to_complex is None or to_complex.inputs[0] is None:
            return None
        x = to_complex.inputs[0]
        complex_type = _COMPLEX_OF.get(x.dtype) if x.dtype is not None else None
        if custom_ops.int_attr(to_complex, "to", 0) != complex_type:
            return None
    if complex_type is None or x.dtype is None:
        return None  # x is not float32/float64: ONNX's DFT and torch.fft would differ
    nodes.extend([*skipped, to_complex])
    return x, nodes


def _typed_for_verification(model: onnx.ModelProto, x_names: set[str]) -> onnx.ModelProto:
    """``model`` with inferred shapes, each input in ``x_names`` given a rank-3 symbolic
    shape where inference knows none (an unconverted op upstream): the op is the same
    for every rank, so :func:`custom_ops.verify_converter` can still run it."""
    typed = onnx.shape_inference.infer_shapes(model, data_prop=True)
    known = {
        v.name: v
        for v in [*typed.graph.input, *typed.graph.value_info, *typed.graph.output]
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
    }
    for name in sorted(x_names - set(known)):
        elem_type = onnx.TensorProto.FLOAT
        for v in list(typed.graph.value_info):
            if v.name == name:
                elem_type = v.type.tensor_type.elem_type or elem_type
                typed.graph.value_info.remove(v)
        typed.graph.value_info.append(
            onnx.helper.make_tensor_value_info(
                name, elem_type, ["fourier_a", "fourier_b", "fourier_c"]
            )
        )
    return typed


class FourierMixPatch:
    """Rewrite ``Real(FFT2D(Complex(x, 0)))`` into ``tf2torch.FourierMix``."""

    name = "fourier_mix"
    description = (
        "Real(FFT2D(Complex(x, 0) or Cast(x, complex))) -> tf2torch.FourierMix "
        "(local function over DFT) -> FourierMix module (torch.fft.fft2(x).real)"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of mixings replaced."""
        opset = custom_ops.default_opset(model)
        if opset < MIN_OPSET or not {"Real", "FFT2D"} <= {n.op_type for n in model.graph.node}:
            return PassResult(model, 0)
        ir_model = custom_ops.analysed(model)
        graph = ir_model.graph
        new_names: list[str] = []
        x_names: set[str] = set()
        for real in [n for n in graph if n.op_type == "Real"]:
            match = _match(real)
            if match is None:
                continue
            x, nodes = match
            removed = custom_ops.removal_set(nodes, [x], real.outputs[0])
            if removed is None:
                continue
            core = [n for n in nodes if n.op_type in ("Complex", "Cast", "FFT2D", "Real")]
            name = custom_ops.unique_node_name(graph, custom_ops.layer_scope(core, OP_TYPE))
            new = ir.Node(custom_ops.DOMAIN, OP_TYPE, [x], name=name, num_outputs=1)
            # Its dtype is x's (float32/float64, as matched): a mixing right after this one
            # matches on it.
            assert x.dtype is not None
            new.outputs[0].dtype = x.dtype
            custom_ops.replace_match(graph, removed, new, real.outputs[0])
            new_names.append(name)
            if x.name is not None:
                x_names.add(x.name)
        if not new_names:
            return PassResult(model, 0)
        # Verified only now: downstream of a still unconverted FFT, no shapes are known.
        out = custom_ops.finish_patch(self.name, ir_model, model, [], _function(opset))
        typed = _typed_for_verification(out, x_names)
        wanted = set(new_names)
        for node in typed.graph.node:
            if node.name in wanted:
                custom_ops.verify_converter(self.name, typed, node)
        return PassResult(out, len(new_names))


PATCH = FourierMixPatch()
