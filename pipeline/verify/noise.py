"""The float32 noise floor of a converted model: how far float32 itself is from the exact result.

Outputs (:func:`measure_noise`):

The ONNX graph is imported into torch twice over: as it is, and as a float64 copy (every
floating parameter, buffer and input in float64, every ``Cast`` to a floating type made a
``Cast`` to float64, every floating dtype in the FX graph float64).  Both run on the comparison inputs; for each floating output the noise
floor is ``max |out_float32 - out_float64|`` and its scale ``max |out_float64|``.  Both runs
go through the same converters, so a conversion fault moves them alike and cannot widen the
floor; only rounding does.  :class:`pipeline.core.compare.Noise` turns the floor into each
pair's tolerance.

Gradients (:func:`measure_gradient_noise`): the fixed loss differentiated through a float64
copy of the converted module, against the float32 gradients, per parameter.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from pipeline.core import compare, onnx_io
from pipeline.core.memory import groups_within
from pipeline.core.onnx_graph import all_nodes
from pipeline.core.torch_runner import module_device, torch_device
from pipeline.to_torch.importer import import_onnx
from pipeline.verify.gradients import all_differentiable, fixed_loss

log = logging.getLogger(__name__)

_FLOATING = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


@dataclass
class NoiseFloors:
    """The measured floors per floating output, or why they could not be measured."""

    floors: dict[str, compare.Noise] = field(default_factory=dict)
    unmeasured: str | None = None
    """Why there are no floors (the comparison then uses the fixed per-dtype tolerances)."""
    float64_outputs: dict[str, np.ndarray] = field(default_factory=dict)
    """The float64 run's outputs (what TF's own float64 twin is held against)."""


def _float64_graph(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``model`` whose casts to a floating type cast to float64 instead, so the
    float64 run does not drop back to float32 (or float16) half way; None if it has none."""
    model = onnx_io.copy(model)
    changed = False
    for node in all_nodes(model.graph):
        if node.op_type != "Cast":
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i in _FLOATING:
                attribute.i = onnx.TensorProto.DOUBLE
                changed = True
    return model if changed else None


_NARROW = (torch.float32, torch.float16, torch.bfloat16)


def _widened(value: object) -> object:
    if isinstance(value, torch.dtype) and value in _NARROW:
        return torch.float64
    if isinstance(value, list | tuple):
        return type(value)(_widened(v) for v in value)
    return value


def float64_module(module: torch.nn.Module, *, in_place: bool = False) -> torch.nn.Module:
    """A float64 copy of ``module`` (``module`` itself with ``in_place``, for a module made
    only to be measured: a large model's weights then exist once in float32 and once in
    float64, not twice in float32 on the way): parameters and buffers in float64, and in
    every FX graph (a ``torch.export`` module's) each floating dtype argument, e.g. of the
    ``zeros`` that make an LSTM's initial state, made float64 so it does not fall back to
    float32."""
    wide = (module if in_place else copy.deepcopy(module)).double()
    for sub in wide.modules():
        if not isinstance(sub, torch.fx.GraphModule):
            continue
        for node in sub.graph.nodes:
            node.args = _widened(node.args)
            node.kwargs = {k: _widened(v) for k, v in node.kwargs.items()}
        sub.recompile()
    return wide


def _run(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    device: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, np.ndarray]:
    args = []
    for name in input_names:
        tensor = torch.from_numpy(np.ascontiguousarray(inputs[name]))
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        args.append(tensor.to(device))
    with torch.no_grad():
        result = module.to(device)(*args)
    tensors = list(result) if isinstance(result, list | tuple) else [result]
    if len(tensors) != len(output_names):
        raise ValueError(f"{len(tensors)} outputs, expected {len(output_names)}")
    return {n: t.detach().cpu().numpy() for n, t in zip(output_names, tensors, strict=True)}


def measure_noise(
    model: onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> NoiseFloors:
    """The float32 noise floor of every floating, non-float64 output of ``model`` on
    ``inputs`` (see the module docstring).

    Never raises for a model that cannot run in float64 (a converter that insists on
    float32, an op without a float64 kernel): the result then has no floors and
    ``unmeasured`` says why, and the comparison falls back to the fixed tolerances.
    """
    device = torch_device()
    try:
        native = import_onnx(model).eval()
        low = _run(native, inputs, input_names, output_names, device, None)
        widened = _float64_graph(model)
        if widened is not None:  # casts to widen: import that graph (one import at a time)
            del native
            native = import_onnx(widened).eval()
            del widened
        # The float32 import has run: widen it rather than hold a copy beside it.
        wide = float64_module(native, in_place=True)
        high = _run(wide, inputs, input_names, output_names, device, torch.float64)
    except Exception as err:  # any failure only means "no floor": fixed tolerances apply
        text = " ".join(str(err).split())[:200]
        log.info("float32 noise floor not measured: %s", text)
        return NoiseFloors(unmeasured=f"float64 run failed: {type(err).__name__}: {text}")
    floors = {}
    for name in output_names:
        if low[name].dtype.kind == "f" and low[name].dtype != np.float64:
            floor = _floor(low[name], high[name])
            if floor is not None:
                floors[name] = floor
    return NoiseFloors(floors, float64_outputs={k: np.asarray(v) for k, v in high.items()})


FLOOR_CHUNK = 2**22
"""Elements compared at a time by :func:`_floor` (a whole LLM embedding's float64
temporaries would be several times the model's largest tensor)."""


def _floor(low: np.ndarray, high: np.ndarray) -> compare.Noise | None:
    """``max |low - high|`` and ``max |high|`` over the elements finite on both sides."""
    if low.shape != high.shape:
        return None
    noise = scale = -1.0
    low_flat, high_flat = np.asarray(low).reshape(-1), np.asarray(high).reshape(-1)
    for begin in range(0, low_flat.size, FLOOR_CHUNK):
        low64 = low_flat[begin : begin + FLOOR_CHUNK].astype(np.float64)
        high64 = high_flat[begin : begin + FLOOR_CHUNK].astype(np.float64)
        finite = np.isfinite(low64) & np.isfinite(high64)
        if finite.any():
            noise = max(noise, float(np.max(np.abs(low64 - high64)[finite])))
            scale = max(scale, float(np.max(np.abs(high64[finite]))))
    if noise < 0:  # no element finite on both sides
        return None
    return compare.Noise(noise=noise, scale=scale, dtype=low.dtype.name)


def own_floor(
    float32: np.ndarray, float64: np.ndarray, exact: np.ndarray, floor: compare.Noise
) -> float | None:
    """A framework's own floor of one output, ``max |float32 - float64|`` of its own two
    runs, where it is above the graph's ``floor`` (never a narrowing) and its float64 run is
    trusted: it agrees with the graph's float64 run (``exact``) within ``floor``'s tolerance
    (a float64 run that computes something else would report a huge "noise"); else None."""
    low, high, ref = (np.asarray(a, np.float64) for a in (float32, float64, exact))
    if low.shape != high.shape or high.shape != ref.shape:
        return None
    finite = np.isfinite(low) & np.isfinite(high) & np.isfinite(ref)
    if not finite.any():
        return None
    if float(np.max(np.abs(high - ref)[finite])) > floor.tolerance().atol:
        return None
    own = float(np.max(np.abs(low - high)[finite]))
    return own if own > floor.noise else None


def own_floors(
    float32_outputs: Mapping[str, np.ndarray],
    float64_outputs: Mapping[str, np.ndarray],
    floors: NoiseFloors,
) -> dict[str, float]:
    """:func:`own_floor` of every output with a graph floor and both runs."""
    found = {}
    for name, floor in floors.floors.items():
        low, high = float32_outputs.get(name), float64_outputs.get(name)
        exact = floors.float64_outputs.get(name)
        if low is None or high is None or exact is None:
            continue
        own = own_floor(low, high, exact, floor)
        if own is not None:
            found[name] = own
    return found


def module_own_floors(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    float32_outputs: Mapping[str, np.ndarray],
    floors: NoiseFloors,
) -> dict[str, float]:
    """The compared torch module's own floor per output (:func:`own_floors`: its float32
    outputs against a float64 copy of it).  The graph's floor comes from onnx2torch's plain
    import; the module the user gets rounds otherwise (``nn.Linear``'s fused ``addmm`` on a
    chaotic MLP: 2.8x the import's floor).  Empty when the copy cannot run in float64."""
    if not floors.floors:
        return {}
    try:
        # The module itself widened and restored where it can be (one float64 copy of the
        # weights, not a float32 and a float64 one).
        widening = (
            nullcontext(float64_module(module))
            if _has_fx_graphs(module)
            else widened_in_place(module)
        )
        with widening as wide:
            device = module_device(module)
            high = _run(wide, inputs, input_names, output_names, device, torch.float64)
    except Exception as err:  # no float64 copy: the graph's floor stands for the module's
        log.info("the module's own float64 run failed: %s", " ".join(str(err).split())[:200])
        return {}
    return own_floors(float32_outputs, high, floors)


GRADIENT_GROUP_FRACTION = 0.125
"""The float64 gradients are taken a group of parameters at a time, each group at most this
fraction of the parameters (or one parameter), and dropped once their floors are known: all
at once they would be two more copies of the model (a quarter at a time, the 0.3B Llama's
gradient stage peaked at 3.3x its weights, the float64 module being 2x)."""


@contextmanager
def widened_in_place(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` itself in float64 for the duration of the block, then every parameter and
    buffer back in its own dtype (exact: each value came from that dtype).  The same
    ``Parameter`` objects throughout; only for modules without FX graphs, whose dtype
    arguments :func:`float64_module` would have to rewrite."""
    tensors: dict[str, torch.Tensor] = dict(module.named_parameters(remove_duplicate=False))
    tensors.update(module.named_buffers(remove_duplicate=False))
    dtypes = {name: t.dtype for name, t in tensors.items()}
    module.double()
    try:
        yield module
    finally:
        with torch.no_grad():
            for name, parameter in module.named_parameters(remove_duplicate=False):
                if parameter.dtype != dtypes[name]:
                    parameter.data = parameter.data.to(dtypes[name])
            for name, buffer in list(module.named_buffers(remove_duplicate=False)):
                if buffer.dtype != dtypes[name]:
                    owner, _, attr = name.rpartition(".")
                    holder = module.get_submodule(owner) if owner else module
                    holder._buffers[attr] = buffer.to(dtypes[name])


def _has_fx_graphs(module: torch.nn.Module) -> bool:
    return any(isinstance(sub, torch.fx.GraphModule) for sub in module.modules())


def _narrow_float(gradient: np.ndarray) -> bool:
    """Whether ``gradient`` (read once here: it may come from disk) is float32 or narrower."""
    return gradient.dtype.kind == "f" and gradient.dtype != np.float64


def _grouped_floors(
    wide: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    weights: Mapping[str, np.ndarray],
    float32_gradients: Mapping[str, np.ndarray],
) -> dict[str, compare.Noise]:
    """Each parameter's gradient floor: ``float32_gradients`` against the float64 module
    ``wide``'s gradients, taken group by group (:data:`GRADIENT_GROUP_FRACTION`) from one
    backward graph."""
    parameters = dict(wide.named_parameters())
    floors: dict[str, compare.Noise] = {}
    with all_differentiable(wide):
        loss = fixed_loss(wide, inputs, input_names, output_names, weights)
        if not loss.requires_grad:
            return {}
        wanted = [
            (name, p.numel())
            for name, p in parameters.items()
            if name in float32_gradients and _narrow_float(float32_gradients[name])
        ]
        groups = groups_within(wanted, GRADIENT_GROUP_FRACTION)
        for i, group in enumerate(groups):
            grads = torch.autograd.grad(
                loss,
                [parameters[name] for name in group],
                retain_graph=i < len(groups) - 1,
                allow_unused=True,
            )
            for name, grad in zip(group, grads, strict=True):
                if grad is None:
                    continue
                floor = _floor(float32_gradients[name], grad.detach().cpu().numpy())
                if floor is not None:
                    floors[name] = floor
            del grads
    return floors


def measure_gradient_noise(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    weights: Mapping[str, np.ndarray],
    float32_gradients: Mapping[str, np.ndarray],
    outputs: dict[str, np.ndarray] | None = None,
) -> dict[str, compare.Noise]:
    """The float32 noise floor of each parameter's gradient of the fixed loss (``weights``,
    :func:`pipeline.verify.gradients.torch_gradients`): ``float32_gradients`` against the
    gradients of ``module`` in float64 on the same inputs, keyed by parameter name.

    The float64 module is ``module`` itself widened for the measurement and restored after
    (:func:`widened_in_place`; a copy where it has FX graphs), and its gradients are taken
    in groups: the weights exist once, in float64, plus a group's gradients.  Empty when the
    float64 module cannot run (the gradient check then keeps its fixed tolerance);
    ``module`` is left as it was.  ``outputs``, if given, receives the float64 module's
    outputs by name (what TF's float64 twin is held against).
    """
    wide_inputs = {
        k: v.astype(np.float64) if np.asarray(v).dtype.kind == "f" else v
        for k, v in inputs.items()
    }
    try:
        widening = (
            nullcontext(float64_module(module))
            if _has_fx_graphs(module)
            else widened_in_place(module)
        )
        with widening as wide:
            floors = _grouped_floors(
                wide, wide_inputs, input_names, output_names, weights, float32_gradients
            )
            if outputs is not None:
                try:
                    device = module_device(wide)
                    outputs.update(
                        _run(wide, wide_inputs, input_names, output_names, device, None)
                    )
                except Exception as err:  # no outputs: TF's twin cannot be held against them
                    log.info("float64 outputs not computed: %s", " ".join(str(err).split())[:200])
    except Exception as err:  # any failure only means "no floor": fixed tolerances apply
        log.info("gradient noise floor not measured: %s", " ".join(str(err).split())[:200])
        return {}
    return floors
