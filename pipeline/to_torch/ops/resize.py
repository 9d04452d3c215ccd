"""ONNX ``Resize`` (11, 13).

Converter: ours (:func:`convert_resize`): scales that are constants or sizes known at import
make a :class:`StaticResize`; otherwise onnx2torch's ``OnnxResize``.  Code form:
``F.interpolate(x, size=... | scale_factor=..., mode=..., align_corners=...)``.

Exactness (:func:`torch_mode`): ``F.interpolate`` computes only some of ONNX's combinations
of ``mode``, ``coordinate_transformation_mode`` and ``nearest_mode``; the others raise
NotImplementedError at import, naming them, instead of computing other values (onnx2torch
only warns).  Computed exactly: nearest ``asymmetric``/``floor`` (torch ``nearest``);
nearest ``half_pixel``/``pytorch_half_pixel`` with ``round_prefer_ceil`` and
``tf_half_pixel_for_nn`` with ``floor`` (torch ``nearest-exact``); any of these, and
``half_pixel`` with ``round_prefer_floor``, when every scale is a whole number >= 1 (no ties
then; torch ``nearest``); linear and cubic with ``half_pixel`` (``pytorch_half_pixel`` when
no output size is 1) and ``align_corners`` (with scales only when ``input * scale`` is whole:
ONNX divides by the unrounded length); cubic only with ``cubic_coeff_a=-0.75`` and
``exclude_outside=0``.  ``tf_crop_and_resize`` and ``asymmetric`` linear/cubic are refused.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from fractions import Fraction

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.node_converters.resize import OnnxResize
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import Expr, ShapeArgs, known_int_value


class StaticResize(ShapeArgs):
    """``F.interpolate`` over the spatial dims with fixed scales or (symbolic) sizes."""

    def __init__(
        self,
        mode: str,
        align_corners: bool | None,
        scales: Sequence[float] | None,
        sizes: Sequence[Expr] | None,
    ) -> None:
        super().__init__(sizes or ())
        self.mode = mode
        """torch's ``mode`` (``nearest``, ``nearest-exact``, ``bilinear``...)."""
        self.align_corners = align_corners
        self.scales = list(scales) if scales is not None else None
        self.sizes = tuple(sizes) if sizes is not None else None

    def forward(self, input_tensor: torch.Tensor, *sources: torch.Tensor) -> torch.Tensor:
        """Resize the dims after (batch, channel); ``sources`` feed symbolic sizes."""
        return torch.nn.functional.interpolate(
            input_tensor,
            size=self.resolve(self.sizes, sources) if self.sizes is not None else None,
            scale_factor=self.scales,
            mode=self.mode,
            align_corners=self.align_corners,
        )


def _const_floats(graph: OnnxGraph, name: str) -> list[float] | None:
    if not name:
        return None
    try:
        value = get_const_value(name, graph)
    except KeyError:
        return None
    return (
        [float(v) for v in value.reshape(-1).tolist()] if isinstance(value, torch.Tensor) else None
    )


def _spatial_shape(graph: OnnxGraph, name: str) -> list[int | None] | None:
    info = graph.value_info.get(name)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") else None
        for d in info.type.tensor_type.shape.dim[2:]
    ]


def _half_pixel_ties(
    scales: Sequence[float] | None,
    in_sizes: Sequence[int | None] | None,
    out_sizes: Sequence[int | None] | None,
) -> bool:
    """Whether some output position of a half_pixel nearest resize lies exactly half-way
    between two inputs (True when that is unknown at import)."""
    if in_sizes is None or None in in_sizes:
        return True
    for dim, size in enumerate(in_sizes):
        assert size is not None
        if scales:
            ratio, length = 1 / scales[dim], math.floor(size * scales[dim])
        elif out_sizes is not None and out_sizes[dim] is not None:
            length = int(out_sizes[dim])  # type: ignore[arg-type]
            ratio = size / length
        else:
            return True
        for position in range(length):
            source = (position + 0.5) * ratio  # the ONNX coordinate + 0.5
            if math.isclose(source, round(source), rel_tol=0, abs_tol=1e-6):
                return True
    return False


def _nearest_match(
    transform: str,
    nearest: str,
    scales: Sequence[float] | None,
    in_sizes: Sequence[int | None] | None,
    out_sizes: Sequence[int | None] | None,
) -> str | None:
    """``nearest`` or ``nearest-exact`` if torch's picks the same input for every output
    position as ONNX's (input and output sizes known at import), else None."""
    if in_sizes is None or None in in_sizes:
        return None
    onnx_index, floor_index, exact_index = [], [], []
    for dim, size in enumerate(in_sizes):
        assert size is not None
        if scales:
            scale = Fraction(scales[dim])
            length, torch_ratio = math.floor(size * scale), 1 / scale
        elif out_sizes is not None and out_sizes[dim] is not None:
            length = int(out_sizes[dim])  # type: ignore[arg-type]
            scale, torch_ratio = Fraction(length, size), Fraction(size, length)
        else:
            return None
        for d in range(length):
            if transform == "align_corners":
                span = size * scale - 1
                x = Fraction(0) if span == 0 else d * Fraction(size - 1) / span
            elif transform == "asymmetric":
                x = d / scale
            elif transform == "tf_half_pixel_for_nn":
                x = (d + Fraction(1, 2)) / scale
            elif transform == "pytorch_half_pixel" and length == 1:
                x = Fraction(0)
            elif transform in ("half_pixel", "pytorch_half_pixel"):
                x = (d + Fraction(1, 2)) / scale - Fraction(1, 2)
            else:
                return None
            rounded = {
                "round_prefer_floor": math.ceil(x - Fraction(1, 2)),
                "round_prefer_ceil": math.floor(x + Fraction(1, 2)),
                "floor": math.floor(x),
                "ceil": math.ceil(x),
            }.get(nearest)
            if rounded is None:
                return None
            onnx_index.append(min(max(rounded, 0), size - 1))
            floor_index.append(min(math.floor(d * torch_ratio), size - 1))
            exact_index.append(min(math.floor((d + Fraction(1, 2)) * torch_ratio), size - 1))
    if onnx_index == floor_index:
        return "nearest"
    if onnx_index == exact_index:
        return "nearest-exact"
    return None


def torch_mode(
    node: OnnxNode,
    rank: int,
    scales: Sequence[float] | None,
    in_sizes: Sequence[int | None] | None,
    out_sizes: Sequence[int | None] | None,
    run_time_scales: bool = False,
) -> tuple[str, bool | None]:
    """torch's ``(mode, align_corners)`` computing ``node`` exactly (see the module
    docstring); NotImplementedError naming the ONNX modes where there is none.  ``scales``:
    the spatial scales when given as constant scales (``run_time_scales``: given as a tensor
    computed at run time); sizes: spatial input and output sizes when known."""
    attributes = node.attributes
    mode = attributes.get("mode", "nearest")
    transform = attributes.get("coordinate_transformation_mode", "half_pixel")
    nearest = attributes.get("nearest_mode", "round_prefer_floor")
    what = f"Resize ({node.name}): mode={mode} coordinate_transformation_mode={transform}"

    def refuse(why: str) -> NotImplementedError:
        return NotImplementedError(f"{what}: {why}; torch's interpolate computes other values")

    ratios: list[float] | None = list(scales) if scales else None
    if ratios is None and in_sizes and out_sizes and None not in (*in_sizes, *out_sizes):
        ratios = [o / i for o, i in zip(out_sizes, in_sizes, strict=True)]  # type: ignore[operator]
    if mode == "nearest" and not run_time_scales:
        match = _nearest_match(transform, nearest, scales, in_sizes, out_sizes)
        if match is not None:
            return match, None
    if mode == "nearest":
        whole = ratios is not None and all(r >= 1 and r == int(r) for r in ratios)
        if transform == "asymmetric" and nearest == "floor":
            return "nearest", None
        if whole and (transform, nearest) in (
            ("half_pixel", "round_prefer_floor"),
            ("half_pixel", "round_prefer_ceil"),
            ("pytorch_half_pixel", "round_prefer_floor"),
            ("pytorch_half_pixel", "round_prefer_ceil"),
            ("tf_half_pixel_for_nn", "floor"),
        ):
            return "nearest", None
        if (transform, nearest) == ("tf_half_pixel_for_nn", "floor"):
            return "nearest-exact", None
        if transform == "pytorch_half_pixel" and out_sizes and None not in out_sizes:
            transform = "half_pixel" if 1 not in out_sizes else transform
        if transform == "half_pixel" and nearest.startswith("round_prefer"):
            ties = run_time_scales or _half_pixel_ties(scales, in_sizes, out_sizes)
            if nearest == "round_prefer_ceil" or not ties:
                return "nearest-exact", None
        raise refuse(f"nearest_mode={nearest}" + ("" if whole else " (scales not whole)"))
    if mode not in ("linear", "cubic"):
        raise refuse("unknown mode")
    if mode == "cubic":
        if rank != 2:
            raise refuse(f"{rank} spatial dims (torch's bicubic is 2-D)")
        if float(attributes.get("cubic_coeff_a", -0.75)) != -0.75:
            raise refuse(f"cubic_coeff_a={attributes.get('cubic_coeff_a')} (torch: -0.75)")
        if attributes.get("exclude_outside", 0):
            raise refuse("exclude_outside=1")
    torch_name = {("linear", 1): "linear", ("linear", 2): "bilinear", ("linear", 3): "trilinear"}
    name = "bicubic" if mode == "cubic" else torch_name.get((mode, rank))
    if name is None:
        raise refuse(f"{rank} spatial dims")
    if transform == "pytorch_half_pixel":
        if out_sizes is None or None in out_sizes or 1 in out_sizes:
            raise refuse("an output size 1 or unknown (torch uses half_pixel there)")
        transform = "half_pixel"
    if transform == "half_pixel":
        return name, False
    if transform == "align_corners":
        if run_time_scales:
            raise refuse("scales computed at run time")
        if scales:
            if in_sizes is None or None in in_sizes:
                raise refuse("scales with input sizes unknown at import")
            lengths = [i * s for i, s in zip(in_sizes, scales, strict=True)]  # type: ignore[operator]
            if any(not math.isclose(n, round(n)) for n in lengths):
                raise refuse("scales making a fractional output length")
        return name, True
    raise refuse("no torch equivalent")


@override_converter("Resize", versions=(11, 13), produces=(StaticResize, OnnxResize))
def convert_resize(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Resize → :class:`StaticResize` when scales are constants or sizes are known."""
    names = [*node.input_values, "", "", ""]
    scales = _const_floats(graph, names[2])
    sizes = known_int_value(graph, names[3]) if names[3] else None
    in_shape = _spatial_shape(graph, names[0])
    rank = len(in_shape) if in_shape is not None else None
    static_sizes = sizes.ints() if sizes is not None else None
    out_sizes = (
        static_sizes[2:] if static_sizes is not None else _spatial_shape(graph, node.output_values[0])
    )
    if rank is not None:
        mode, align_corners = torch_mode(
            node,
            rank,
            scales[2:] if scales else None,
            in_shape,
            out_sizes,
            run_time_scales=bool(names[2]) and scales is None and not names[3],
        )
    with warnings.catch_warnings():
        if rank is not None:  # torch_mode checked the modes: onnx2torch's warnings are moot
            warnings.simplefilter("ignore")
        reference = use_fallback(fallback, node, graph, "no converter")
    resize = reference.torch_module
    if not isinstance(resize, OnnxResize) or not resize.ignore_roi or rank is None:
        return reference
    if scales and sizes is None:
        if scales[:2] != [1.0, 1.0]:
            raise NotImplementedError("Resize: torch cannot scale the batch or channel dims")
        module = StaticResize(mode, align_corners, scales[2:], None)
    elif sizes is not None and not scales:
        module = StaticResize(mode, align_corners, None, sizes.elems[2:])
    else:
        return reference
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(names[0], *module.sources), outputs=node.output_values),
    )


@translates(StaticResize)
def _resize(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticResize)
    x = ctx.args[0]
    mode = module.mode
    if module.sizes is not None:
        size = f"size=({', '.join(ctx.shape_args(module.sizes))},)"
    else:
        assert module.scales is not None
        size = f"scale_factor=({', '.join(literals.number(s) for s in module.scales)},)"
    corners = f", align_corners={module.align_corners}" if module.align_corners is not None else ""
    return f'F.interpolate({x}, {size}, mode="{mode}"{corners})'
