"""Our onnx2torch converters: the ops whose integer inputs onnx2torch reads at run time.

Why converters (and not an FX pass over onnx2torch's output): at conversion time we still
have the ONNX graph, its shape inference and ONNX semantics, so deciding that an input is a
constant, or arithmetic on ``x.shape``, is a question about ONNX values
(:mod:`pipeline.to_torch.converters.shape_values`).  An FX pass would have to recover the same facts
from onnx2torch's private module attributes.  Each converter builds a module that takes
those values as Python ints, or computes them from ``x.shape`` in ``forward``; this is what
lets ``torch.export`` trace with a dynamic batch dimension.  Where an input is genuinely
data-dependent, the converter falls back to onnx2torch's own module (runs eagerly, does not
export).

Importing this package registers the converters (replacing onnx2torch's entries):
Reshape, Slice, Squeeze, Unsqueeze, Expand, Tile, ConstantOfShape, Split, Resize, Pad,
Range, CumSum, TopK and the Reduce ops whose axes are an input.

Also adds converters onnx2torch lacks: LSTM → ``nn.LSTM`` and GRU → ``nn.GRU``
(:mod:`pipeline.to_torch.converters.recurrent`), GlobalMaxPool.
"""

from pipeline.to_torch.converters import (  # noqa: F401 -- imported to register the converters
    comparisons,
    constant_of_shape,
    cumsum,
    expand,
    global_max_pool,
    pad,
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
    unsqueeze,
)
