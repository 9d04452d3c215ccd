"""ONNX ``LSTM`` → ``nn.LSTM`` and ``GRU`` → ``nn.GRU`` (opsets 7, 14 and 22), and
``ReverseSequence`` (how Keras's ``go_backwards`` arrives when the RNN itself is not fused).

Converters: ours (:func:`convert_recurrent`, :func:`convert_reverse_sequence`); onnx2torch
has none.  Code forms: :class:`OnnxRecurrent`'s forward spelled out around
``self.<rnn>(x)`` (or ``self.<rnn>(x, (h0, c0))``); read for its final states it is
``(None, *self.<rnn>(x)[1])`` when ``Y`` is unused in layout 0, else the helper
``recurrent_outputs`` turns torch's ``(output, (h_n, c_n))`` into ONNX's ``(Y, Y_h, Y_c)``;
:class:`RecurrentSequence` (what ``codegen/simplify.py`` makes of an
``OnnxRecurrent`` read only for its output sequence) as ``self.<rnn>(x)[0]``;
:class:`ReverseSequence` as the helper function ``reverse_sequence``.

Each node becomes an :class:`OnnxRecurrent` holding a real ``nn.LSTM``/``nn.GRU`` (one
layer; ``bidirectional`` for ``direction="bidirectional"``), whose weights are
``nn.Parameter``s copied from the ONNX ``W``, ``R`` and ``B`` constants with the gate blocks
reordered:

- LSTM: ONNX ``(i, o, f, c)`` → torch ``(i, f, g, o)``;
- GRU: ONNX ``(z, r, h)`` → torch ``(r, z, n)``.  Only ``linear_before_reset=1`` is torch's
  (and Keras ``reset_after=True``'s) cell: ``n = tanh(W_n x + b_in + r * (R_n h + b_hn))``.
  With 0 (ONNX's default; Keras ``reset_after=False``, Keras 2's default) the reset gate
  multiplies ``h`` *before* ``R_n``, which ``nn.GRU`` cannot express: such a node becomes a
  :class:`GruResetBefore` instead, a GRU layer in plain torch ops looping over time, with one
  parameter per direction of ``W``, ``R`` and each half of ``B`` (ONNX's layout and gate
  order, so provenance finds each Keras variable in one tensor).  Its code form is the class
  itself: its source is written into ``model.py`` (``codegen/modules.py``'s
  ``CUSTOM_CLASSES``, which this module extends) and it is called as ``self.<gru>(x[, h0])``.
  Its time loop runs ``x.shape[0]`` steps, so ``torch.export`` needs a static sequence
  length (a dynamic one violates its constraints; the batch stays dynamic).

ONNX ``B = [Wb, Rb]`` gives ``bias_ih`` and ``bias_hh``; without ``B`` the torch module has
no biases (ONNX's default is zeros).  ``direction="reverse"`` runs a forward ``nn.LSTM`` over
the time-reversed sequence and reverses ``Y`` back.  Both ``layout`` values are handled
(0: ``X`` is ``(seq, batch, in)``; 1: ``(batch, seq, in)``); the module returns ``Y``,
``Y_h`` (and ``Y_c``) in ONNX's shapes for that layout, ``None`` for an output nothing reads.

An ``initial_h``/``initial_c`` that is known to be zeros (a zero constant, or tf2onnx's
``Expand(0, shape)`` chain) is dropped, so the module calls ``nn.LSTM(x)`` and the chain
becomes dead code; any other initial state is a real input.  Batch sizes come from the
tensors, so the module exports with a dynamic batch dimension.

Unsupported (``NotImplementedError`` with the reason, which the import stage reports): non-
default activations, ``clip``, ``input_forget=1``, non-zero peepholes ``P``, weights that
are not constants, and ``sequence_lens`` other than a constant equal to the (static)
sequence length everywhere.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value
from torch import nn

from pipeline.to_torch.codegen import modules as codegen_modules
from pipeline.to_torch.ops.registry import (
    NodeContext,
    call_attribute,
    new_converter,
    register_helper,
    translates,
)
from pipeline.to_torch.ops.shape_values import static_dims

_VERSIONS = (7, 14, 22)

# torch gate block i takes ONNX gate block _ORDER[op][i].
_ORDER = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2)}
_DEFAULT_ACTIVATIONS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh")}
# Ops through which "all zeros" carries from input 0 to the output (tf2onnx's
# ``Unsqueeze(Expand(zeros, Concat(batch, hidden)))`` initial states).
_ZERO_PRESERVING = {"Expand", "Unsqueeze", "Squeeze", "Reshape", "Identity", "Cast", "Tile"}


class OnnxRecurrent(nn.Module):
    """An ONNX ``LSTM``/``GRU`` node as an ``nn.LSTM``/``nn.GRU`` with ONNX's inputs/outputs.

    ``forward(x, *states)`` takes ONNX's ``X`` and the initial states named by ``states``
    (``"h"``, ``"c"``: those the node has that are not known zeros) in the node's
    ``layout`` and returns a tensor when the node has one output, else a tuple with
    one entry per ONNX output (``Y``, ``Y_h``, ``Y_c``), ``None`` where unused.
    """

    def __init__(
        self,
        rnn: nn.LSTM | nn.GRU,
        layout: int,
        reverse: bool,
        wanted: Sequence[bool],
        states: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.rnn = rnn
        self.layout = layout
        self.reverse = reverse
        self.wanted = tuple(wanted)
        self.states = tuple(states)

    def _state_in(self, state: torch.Tensor | None) -> torch.Tensor | None:
        # torch wants (num_directions, batch, hidden) whatever batch_first says.
        if state is None or self.layout == 0:
            return state
        return state.transpose(0, 1).contiguous()

    def _state_out(self, state: torch.Tensor) -> torch.Tensor:
        return state if self.layout == 0 else state.transpose(0, 1)

    def forward(
        self, x: torch.Tensor, *states: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor | None, ...]:
        """``Y`` (and ``Y_h``, ``Y_c``) as ONNX defines them for this node."""
        given = dict(zip(self.states, states, strict=True))
        initial_h, initial_c = given.get("h"), given.get("c")
        time_axis = self.layout  # 0: (seq, batch, in); 1: (batch, seq, in)
        if self.reverse:
            x = x.flip(time_axis)
        h0 = self._state_in(initial_h)
        c0 = self._state_in(initial_c)
        h_n: torch.Tensor
        c_n: torch.Tensor | None = None
        if isinstance(self.rnn, nn.LSTM):
            if h0 is None and c0 is None:
                out, (h_n, c_n) = self.rnn(x)
            else:
                if h0 is None:
                    assert c0 is not None
                    h0 = torch.zeros_like(c0)
                if c0 is None:
                    c0 = torch.zeros_like(h0)
                out, (h_n, c_n) = self.rnn(x, (h0, c0))
        else:
            out, h_n = self.rnn(x) if h0 is None else self.rnn(x, h0)

        results: list[torch.Tensor | None] = [None] * len(self.wanted)
        if self.wanted[0]:
            num_directions = 2 if self.rnn.bidirectional else 1
            y = out.unflatten(-1, (num_directions, self.rnn.hidden_size))
            if self.reverse:
                y = y.flip(time_axis)
            # layout 0: (seq, batch, dirs, hidden) → ONNX (seq, dirs, batch, hidden);
            # layout 1: (batch, seq, dirs, hidden) is ONNX's layout already.
            results[0] = y.transpose(1, 2) if self.layout == 0 else y
        if len(self.wanted) > 1 and self.wanted[1]:
            results[1] = self._state_out(h_n)
        if len(self.wanted) > 2 and self.wanted[2]:
            assert c_n is not None
            results[2] = self._state_out(c_n)
        if len(results) == 1:
            assert results[0] is not None
            return results[0]
        return tuple(results)


class GruResetBefore(nn.Module):
    """An ONNX ``GRU`` with ``linear_before_reset=0`` (Keras ``reset_after=False``) in plain
    torch ops: the reset gate scales ``h`` *before* the recurrent matmul, which ``nn.GRU``
    cannot express.  Per step, gates in ONNX's (and Keras's) order ``(z, r, h)``::

        z = sigmoid(x W_z^T + h R_z^T + Wb_z + Rb_z)
        r = sigmoid(x W_r^T + h R_r^T + Wb_r + Rb_r)
        n = tanh(x W_h^T + (r * h) R_h^T + Wb_h + Rb_h)
        h = (1 - z) * n + z * h

    Weights are named like ``nn.GRU``'s (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
    ``bias_hh_l0``, ``_reverse`` for the backward direction of a bidirectional layer) but keep
    ONNX's layout: one direction of ``W`` (3H, in), ``R`` (3H, H) and the two halves of
    ``B`` (3H each), gate blocks unreordered.  ``direction`` is ONNX's (``forward``,
    ``reverse``, ``bidirectional``); ``layout`` 0: ``x`` is (seq, batch, in), 1: (batch, seq,
    in).  ``forward(x, h0=None)`` returns ``Y`` ((seq, dirs, batch, H) in layout 0, (batch,
    seq, dirs, H) in layout 1) when ``outputs`` is 1, else ``(Y, Y_h)`` (Y_h (dirs, batch, H)
    in layout 0, (batch, dirs, H) in layout 1).  The time loop is a Python loop over
    ``x.shape[0]``: ``torch.export`` unrolls it for a static sequence length.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        direction: str = "forward",
        layout: int = 0,
        outputs: int = 2,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.direction = direction
        self.layout = layout
        self.outputs = outputs
        gates = 3 * hidden_size
        suffixes = ["", "_reverse"] if direction == "bidirectional" else [""]
        for suffix in suffixes:
            self.register_parameter(
                f"weight_ih_l0{suffix}", nn.Parameter(torch.zeros(gates, input_size))
            )
            self.register_parameter(
                f"weight_hh_l0{suffix}", nn.Parameter(torch.zeros(gates, hidden_size))
            )
            if bias:
                self.register_parameter(f"bias_ih_l0{suffix}", nn.Parameter(torch.zeros(gates)))
                self.register_parameter(f"bias_hh_l0{suffix}", nn.Parameter(torch.zeros(gates)))

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, bias={self.bias}, "
            f"direction={self.direction!r}, layout={self.layout}, outputs={self.outputs}"
        )

    def _run(
        self, x: torch.Tensor, h: torch.Tensor, suffix: str, backward: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One direction over (seq, batch, in) ``x`` from ``h`` (batch, H): (seq, batch, H)
        and the last state."""
        size = self.hidden_size
        w = getattr(self, f"weight_ih_l0{suffix}")
        r = getattr(self, f"weight_hh_l0{suffix}")
        gx = torch.matmul(x, w.t())  # (seq, batch, 3H): the input part of every step
        r_zr, r_h = r[: 2 * size], r[2 * size :]
        b_zr: torch.Tensor | None = None
        b_h: torch.Tensor | None = None
        if self.bias:
            wb = getattr(self, f"bias_ih_l0{suffix}")
            rb = getattr(self, f"bias_hh_l0{suffix}")
            gx = gx + wb
            b_zr, b_h = rb[: 2 * size], rb[2 * size :]
        steps = x.shape[0]
        order = range(steps - 1, -1, -1) if backward else range(steps)
        ys: list[torch.Tensor] = [h] * steps
        for t in order:
            x_z, x_r, x_h = gx[t].split(size, dim=-1)
            h_zr = torch.matmul(h, r_zr.t())
            if b_zr is not None:
                h_zr = h_zr + b_zr
            h_z, h_r = h_zr.split(size, dim=-1)
            z = torch.sigmoid(x_z + h_z)
            reset = torch.sigmoid(x_r + h_r)
            h_n = torch.matmul(reset * h, r_h.t())
            if b_h is not None:
                h_n = h_n + b_h
            n = torch.tanh(x_h + h_n)
            h = (1 - z) * n + z * h
            ys[t] = h
        return torch.stack(ys, dim=0), h

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """ONNX's ``Y`` (and ``Y_h``) for ``x`` and the initial state ``h0`` (zeros if None)."""
        if self.layout == 1:
            x = x.transpose(0, 1)
            h0 = None if h0 is None else h0.transpose(0, 1)
        dirs = 2 if self.direction == "bidirectional" else 1
        if h0 is None:
            h0 = x.new_zeros(dirs, x.shape[1], self.hidden_size)
        ys, hs = [], []
        for d in range(dirs):
            y, h = self._run(
                x, h0[d], "_reverse" if d == 1 else "", d == 1 or self.direction == "reverse"
            )
            ys.append(y)
            hs.append(h)
        y_all = torch.stack(ys, dim=1)  # (seq, dirs, batch, H)
        h_n = torch.stack(hs, dim=0)  # (dirs, batch, H)
        if self.layout == 1:
            y_all = y_all.permute(2, 0, 1, 3)
            h_n = h_n.transpose(0, 1)
        if self.outputs == 1:
            return y_all
        return y_all, h_n


def _constant(graph: OnnxGraph, node: OnnxNode, name: str, what: str) -> np.ndarray:
    try:
        value = get_const_value(name, graph)
    except KeyError:
        raise NotImplementedError(
            f"{node.operation_type} ({node.name}): {what} is computed at run time, not a constant"
        ) from None
    if not isinstance(value, torch.Tensor):
        raise NotImplementedError(f"{node.operation_type} ({node.name}): {what} is not a tensor")
    return value.detach().cpu().numpy()


def _known_zeros(graph: OnnxGraph, name: str, depth: int = 0) -> bool:
    """Whether the value ``name`` is all zeros whatever the graph inputs are."""
    if not name or depth > 16:
        return False
    try:
        value = get_const_value(name, graph)
    except KeyError:
        value = None
    if isinstance(value, torch.Tensor):
        return value.numel() <= 1 << 20 and not bool(value.any())
    try:
        producer, _ = graph.value_as_node_output(name)
    except KeyError:
        return False
    op = producer.operation_type
    if producer.domain not in ("", "ai.onnx"):
        return False
    if op in _ZERO_PRESERVING:
        return _known_zeros(graph, producer.input_values[0], depth + 1)
    if op == "Concat":
        return all(_known_zeros(graph, v, depth + 1) for v in producer.input_values)
    if op == "ConstantOfShape":
        fill = producer.attributes.get("value")
        return fill is None or not bool(fill.to_torch().any())
    return False


def _consumed(graph: OnnxGraph) -> set[str]:
    used = set(graph.output_values)
    for other in graph.nodes.values():
        used.update(other.input_values)
    return used


def _check_attributes(node: OnnxNode, graph: OnnxGraph, num_directions: int) -> None:
    op = node.operation_type
    attrs = node.attributes

    def reject(why: str) -> None:
        raise NotImplementedError(f"{op} ({node.name}): {why}")

    activations = attrs.get("activations")
    if activations is not None:
        expected = list(_DEFAULT_ACTIVATIONS[op]) * num_directions
        if [str(a).lower() for a in activations] != expected:
            reject(f"activations {list(activations)} (only the defaults {expected} map to torch)")
    if "clip" in attrs:
        reject(f"clip={attrs['clip']} (nn.{op} has no cell clipping)")
    if attrs.get("input_forget", 0):
        reject("input_forget=1 (coupled input/forget gates; nn.LSTM has separate ones)")

    inputs = node.input_values
    if op == "LSTM" and len(inputs) > 7 and inputs[7]:
        peepholes = _constant(graph, node, inputs[7], "the peephole weights P")
        if peepholes.any():
            reject("peephole weights P (nn.LSTM has no peepholes)")
    if len(inputs) > 4 and inputs[4]:
        layout = attrs.get("layout", 0)
        lengths = _constant(graph, node, inputs[4], "sequence_lens")
        dims = static_dims(graph, inputs[0])
        seq_len = dims[layout] if dims is not None and len(dims) == 3 else None
        if seq_len is None or not (lengths == seq_len).all():
            reject(
                "sequence_lens shorter than the sequence (or sequence length unknown at "
                "import): nn.LSTM/nn.GRU run every step of every sequence"
            )


def _gate_blocks(array: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """``array`` (gates * hidden, ...) with its gate blocks in ``order``."""
    blocks = np.split(array, len(order), axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


@dataclass(frozen=True)
class _Weights:
    """A node's checked constants and settings."""

    w: np.ndarray
    r: np.ndarray
    b: np.ndarray | None
    hidden_size: int
    direction: str
    layout: int

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1


def _checked_weights(node: OnnxNode, graph: OnnxGraph) -> _Weights:
    op = node.operation_type
    attrs = node.attributes
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise NotImplementedError(f"{op} ({node.name}): unknown direction {direction!r}")
    num_directions = 2 if direction == "bidirectional" else 1
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise NotImplementedError(f"{op} ({node.name}): unknown layout {layout}")
    _check_attributes(node, graph, num_directions)

    inputs = node.input_values
    w = _constant(graph, node, inputs[1], "the input weights W")
    r = _constant(graph, node, inputs[2], "the recurrent weights R")
    b = _constant(graph, node, inputs[3], "the biases B") if len(inputs) > 3 and inputs[3] else None
    num_gates = len(_ORDER[op])
    hidden_size = int(attrs.get("hidden_size", r.shape[-1]))
    if w.shape[:2] != (num_directions, num_gates * hidden_size) or r.shape != (
        num_directions,
        num_gates * hidden_size,
        hidden_size,
    ):
        raise NotImplementedError(
            f"{op} ({node.name}): W {w.shape} / R {r.shape} do not match hidden_size="
            f"{hidden_size} and {num_directions} direction(s)"
        )
    if b is not None and b.shape != (num_directions, 2 * num_gates * hidden_size):
        raise NotImplementedError(f"{op} ({node.name}): B has shape {b.shape}")
    return _Weights(w, r, b, hidden_size, direction, layout)


def _build_rnn(node: OnnxNode, graph: OnnxGraph) -> tuple[nn.LSTM | nn.GRU, int, bool]:
    op = node.operation_type
    weights = _checked_weights(node, graph)
    w, r, b = weights.w, weights.r, weights.b
    hidden_size, layout = weights.hidden_size, weights.layout
    num_directions, direction = weights.num_directions, weights.direction
    rnn_class = nn.LSTM if op == "LSTM" else nn.GRU
    dtype = torch.from_numpy(w[:0]).dtype
    rnn = rnn_class(
        input_size=w.shape[2],
        hidden_size=hidden_size,
        bias=b is not None,
        batch_first=layout == 1,
        bidirectional=num_directions == 2,
        dtype=dtype,
    )
    order = _ORDER[op]
    with torch.no_grad():
        for d in range(num_directions):
            suffix = "_reverse" if d == 1 else ""
            tensors = {
                f"weight_ih_l0{suffix}": _gate_blocks(w[d], order),
                f"weight_hh_l0{suffix}": _gate_blocks(r[d], order),
            }
            if b is not None:
                w_bias, r_bias = np.split(b[d], 2)
                tensors[f"bias_ih_l0{suffix}"] = _gate_blocks(w_bias, order)
                tensors[f"bias_hh_l0{suffix}"] = _gate_blocks(r_bias, order)
            for name, value in tensors.items():
                getattr(rnn, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return rnn, layout, direction == "reverse"


def convert_recurrent(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ONNX ``LSTM``/``GRU`` → :class:`OnnxRecurrent` (inputs ``X``, ``initial_h``,
    ``initial_c``; states known to be zero are left out)."""
    if node.operation_type == "GRU" and node.attributes.get("linear_before_reset", 0) == 0:
        return _convert_reset_before(node, graph)
    rnn, layout, reverse = _build_rnn(node, graph)
    inputs = node.input_values
    state_names = [inputs[i] if len(inputs) > i else "" for i in (5, 6)]
    if node.operation_type == "GRU":
        state_names = state_names[:1]
    state_names = ["" if _known_zeros(graph, name) else name for name in state_names]
    # Only the states given, named in the module (an empty input would become a keyword
    # argument in onnx2torch's graph, which code generation does not see).
    states = [kind for kind, name in zip("hc", state_names, strict=False) if name]
    state_names = [name for name in state_names if name]
    consumed = _consumed(graph)
    wanted = [bool(name) and name in consumed for name in node.output_values]
    wanted[0] = wanted[0] or len(wanted) == 1  # a lone output is returned as it is
    return OperationConverterResult(
        torch_module=OnnxRecurrent(
            rnn, layout=layout, reverse=reverse, wanted=wanted, states=states
        ),
        onnx_mapping=OnnxMapping(
            inputs=(inputs[0], *state_names), outputs=tuple(node.output_values)
        ),
    )


def _convert_reset_before(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ONNX ``GRU`` with ``linear_before_reset=0`` → :class:`GruResetBefore` (inputs ``X``
    and ``initial_h`` unless it is known to be zeros)."""
    weights = _checked_weights(node, graph)
    w, r, b = weights.w, weights.r, weights.b
    inputs = node.input_values
    outputs = tuple(node.output_values)
    module = GruResetBefore(
        int(w.shape[2]),
        weights.hidden_size,
        bias=b is not None,
        direction=weights.direction,
        layout=weights.layout,
        outputs=min(len(outputs), 2),
    ).to(torch.from_numpy(w[:0]).dtype)
    with torch.no_grad():
        for d in range(weights.num_directions):
            suffix = "_reverse" if d == 1 else ""
            tensors = {f"weight_ih_l0{suffix}": w[d], f"weight_hh_l0{suffix}": r[d]}
            if b is not None:
                tensors[f"bias_ih_l0{suffix}"], tensors[f"bias_hh_l0{suffix}"] = np.split(b[d], 2)
            for name, value in tensors.items():
                getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    h0 = inputs[5] if len(inputs) > 5 else ""
    h0 = "" if _known_zeros(graph, h0) else h0
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(inputs[0], *([h0] if h0 else [])), outputs=outputs),
    )


new_converter("LSTM", versions=_VERSIONS, produces=(OnnxRecurrent,))(convert_recurrent)
new_converter("GRU", versions=_VERSIONS, produces=(OnnxRecurrent, GruResetBefore))(
    convert_recurrent
)


class ReverseSequence(nn.Module):
    """ONNX ``ReverseSequence``: reverse the first ``sequence_lens[b]`` steps of each batch
    entry along ``time_axis``, leaving the rest in place.

    A ``gather`` with indices built from ``arange`` (no data-dependent shapes), so it exports
    with a dynamic batch.  tf2onnx writes TF's ``ReverseV2`` on the time axis (Keras
    ``go_backwards``, the backward half of ``Bidirectional``) this way, with full lengths.
    """

    def __init__(self, batch_axis: int, time_axis: int) -> None:
        super().__init__()
        self.batch_axis = batch_axis
        self.time_axis = time_axis

    def forward(self, data: torch.Tensor, sequence_lens: torch.Tensor) -> torch.Tensor:
        """``data`` with each sequence's valid prefix reversed."""
        return reverse_sequence(data, sequence_lens, self.time_axis)


@new_converter("ReverseSequence", versions=(10,), produces=(ReverseSequence,))
def convert_reverse_sequence(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ONNX ``ReverseSequence`` → :class:`ReverseSequence`."""
    batch_axis = int(node.attributes.get("batch_axis", 1))
    time_axis = int(node.attributes.get("time_axis", 0))
    if {batch_axis, time_axis} != {0, 1}:
        raise NotImplementedError(
            f"ReverseSequence ({node.name}): batch_axis={batch_axis}, time_axis={time_axis}"
        )
    return OperationConverterResult(
        torch_module=ReverseSequence(batch_axis=batch_axis, time_axis=time_axis),
        onnx_mapping=OnnxMapping(inputs=tuple(node.input_values), outputs=node.output_values),
    )


class RecurrentSequence(nn.Module):
    """An ``nn.LSTM``/``nn.GRU`` (time-major, zero initial state) read only for its output
    sequence: ``(seq, batch, dirs * hidden)``, time-reversed around the call if ``reverse``.

    Never made by the converter: ``codegen/simplify.py`` puts it in place of an
    :class:`OnnxRecurrent` whose ``Y`` is only reshaped back into torch's output."""

    def __init__(self, rnn: nn.LSTM | nn.GRU, reverse: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.reverse = reverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The output sequence."""
        if self.reverse:
            return self.rnn(x.flip(0))[0].flip(0)
        return self.rnn(x)[0]


@translates(OnnxRecurrent)
def _recurrent(ctx: NodeContext) -> str:
    # The module's forward, spelled out: ONNX's Y is (seq, dirs, batch, hidden) in layout 0.
    module = ctx.module
    assert isinstance(module, OnnxRecurrent)
    rnn = module.rnn
    x = ctx.args[0]
    time_axis = module.layout
    if module.reverse:
        x = f"{x}.flip({time_axis})"
    # torch wants each state as (dirs, batch, hidden) whatever the layout.
    given = {
        kind: arg if module.layout == 0 else f"{arg}.transpose(0, 1).contiguous()"
        for kind, arg in zip(module.states, ctx.args[1:], strict=True)
    }
    if isinstance(rnn, nn.LSTM) and given:
        # ONNX's missing initial_h or initial_c is zeros; torch wants both or neither.
        h0 = given.get("h") or f"torch.zeros_like({given['c']})"
        c0 = given.get("c") or f"torch.zeros_like({h0})"
        call = f"{ctx.attribute}({x}, ({h0}, {c0}))"
    else:
        call = f"{ctx.attribute}({x}{''.join(f', {s}' for s in given.values())})"
    wanted = module.wanted
    if len(wanted) > 1 and any(wanted[1:]):
        return _with_final_states(ctx, module, call)
    y = f"{call}[0].unflatten(-1, ({2 if rnn.bidirectional else 1}, {rnn.hidden_size}))"
    if module.reverse:
        y = f"{y}.flip({time_axis})"
    if module.layout == 0:
        y = f"{y}.transpose(1, 2)"
    return y if len(wanted) == 1 else f"({y},)"


def _with_final_states(ctx: NodeContext, module: OnnxRecurrent, call: str) -> str:
    """``(Y, Y_h[, Y_c])`` from one call: the states alone as torch returns them when
    ``Y`` is unused in layout 0 (torch's ``h_n``/``c_n`` are ONNX's ``Y_h``/``Y_c`` there),
    else through the helper ``recurrent_outputs``."""
    is_lstm = isinstance(module.rnn, nn.LSTM)
    if not module.wanted[0] and module.layout == 0:
        return f"(None, *{call}[1])" if is_lstm else f"(None, {call}[1])"
    helper = ctx.helper("recurrent_outputs")
    flags = f"layout={module.layout}" + (", reverse=True" if module.reverse else "")
    return f"{helper}(*{call}, {module.rnn.hidden_size}, {flags})"


register_helper(
    "recurrent_outputs",
    '''
def recurrent_outputs(
    output: torch.Tensor,
    state: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    hidden_size: int,
    layout: int,
    reverse: bool = False,
) -> tuple[torch.Tensor, ...]:
    """ONNX's ``(Y, Y_h)`` (and ``Y_c`` for an LSTM) from what ``nn.LSTM``/``nn.GRU``
    returned: ``Y`` is (seq, dirs, batch, hidden) in layout 0, (batch, seq, dirs, hidden) in
    layout 1; the states (dirs, batch, hidden) and (batch, dirs, hidden).  ``reverse``: the
    input was time-reversed for the call, so the sequence is reversed back."""
    states = state if isinstance(state, tuple) else (state,)
    y = output.unflatten(-1, (-1, hidden_size))
    if reverse:
        y = y.flip(layout)
    if layout == 0:
        return (y.transpose(1, 2), *states)
    return (y, *(s.transpose(0, 1) for s in states))
''',
)


@translates(RecurrentSequence)
def _recurrent_sequence(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, RecurrentSequence)
    if module.reverse:
        return f"{ctx.attribute}({ctx.args[0]}.flip(0))[0].flip(0)"
    return f"{ctx.attribute}({ctx.args[0]})[0]"


@translates(ReverseSequence)
def _reverse_sequence(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, ReverseSequence)
    name = ctx.helper("reverse_sequence")
    return f"{name}({ctx.args[0]}, {ctx.args[1]}, time_axis={module.time_axis})"


reverse_sequence: Callable[..., torch.Tensor] = register_helper(
    "reverse_sequence",
    '''
def reverse_sequence(data: torch.Tensor, lengths: torch.Tensor, time_axis: int) -> torch.Tensor:
    """ONNX ReverseSequence: reverse the first ``lengths[b]`` steps of each sequence."""
    steps = torch.arange(data.shape[time_axis], device=data.device)
    lengths = lengths.to(torch.int64)
    if time_axis == 0:  # (time, batch, ...)
        steps, lengths = steps[:, None], lengths[None, :]
    else:  # (batch, time, ...)
        steps, lengths = steps[None, :], lengths[:, None]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    index = index.reshape(*index.shape, *([1] * (data.dim() - 2))).expand_as(data)
    return torch.gather(data, time_axis, index)
''',
)


# GruResetBefore is written into model.py as a class (its source) and called as
# ``self.<path>(x[, h0])``: codegen's walk calls any module of ``CUSTOM_CLASSES`` through
# ``call_attribute``, and builds it from the constructor below.  Registered here (the op's home)
# rather than in codegen/modules.py; the translator entry records the same code form.
def _gru_reset_before_constructor(module: nn.Module) -> str:
    assert isinstance(module, GruResetBefore)
    return (
        f"GruResetBefore({module.input_size}, {module.hidden_size}, bias={module.bias}, "
        f"direction={module.direction!r}, layout={module.layout}, outputs={module.outputs})"
    )


codegen_modules.CUSTOM_CLASSES[GruResetBefore] = codegen_modules.CustomClass(
    inspect.getsource(GruResetBefore), _gru_reset_before_constructor
)
translates(GruResetBefore)(call_attribute)
