"""Every ONNX op the import stage handles, one home each: converter, module class, code form.

Each module here is one op or op family and holds, side by side, the op's converter (ours,
registered over onnx2torch's with :func:`~pipeline.to_torch.ops.registry.override_converter`
or added with :func:`~pipeline.to_torch.ops.registry.new_converter`; or the note
:func:`~pipeline.to_torch.ops.registry.uses_onnx2torch` that onnx2torch's is used as it is),
the torch module class it builds when that is ours, and its code form for
``torch_model/model.py`` (:func:`~pipeline.to_torch.ops.registry.translates`).  Importing
this package registers all of them; :func:`handled_ops` lists where each op lives.

Why our converters (and not an FX pass over onnx2torch's output): at conversion time we still
have the ONNX graph, its shape inference and ONNX semantics, so deciding that an input is a
constant, or arithmetic on ``x.shape``, is a question about ONNX values
(:mod:`pipeline.to_torch.ops.shape_values`).  An FX pass would have to recover the same facts
from onnx2torch's private module attributes.  Each of our converters builds a module that
takes those values as Python ints, or computes them from ``x.shape`` in ``forward``; this is
what lets ``torch.export`` trace with a dynamic batch dimension.  Where an input is genuinely
data-dependent, the converter falls back to onnx2torch's own module (runs eagerly, does not
export, has no code form: ``REFUSED`` in :mod:`pipeline.to_torch.ops.registry`).

Import order: code forms use :mod:`pipeline.to_torch.codegen.literals`, and codegen's walk
imports the registry and the classes it special-cases from here, so the two packages import
each other's modules.  Importing codegen first (below) makes the order the same whichever of
the two a caller imports first.
"""

import pipeline.to_torch.codegen  # noqa: F401 -- first: see "Import order" above
from pipeline.to_torch.ops import (  # noqa: F401 -- imported to register converters and code forms
    activations,
    argextremum,
    arithmetic,
    comparisons,
    constant_of_shape,
    conv_transpose,
    cumsum,
    depth_to_space,
    einsum,
    expand,
    eye_like,
    gather_scatter,
    global_pool,
    layout,
    loop,
    nan_inf,
    normalization,
    one_hot,
    pad,
    pooling,
    range,
    recurrent,
    reduce,
    reshape,
    resize,
    slice,
    split,
    squeeze,
    tile,
    topk,
    trilu,
    weighted,
)
from pipeline.to_torch.ops.registry import OPS, OpEntry


def handled_ops() -> dict[str, OpEntry]:
    """ONNX op type → its home module, whose converter it uses, and the classes it makes."""
    return dict(sorted(OPS.items()))


__all__ = ["OpEntry", "handled_ops"]
