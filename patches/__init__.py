"""Custom-op patches: one module per op, each defining ``PATCH``.

``PATCH`` is an object with ``name`` (unique), ``description`` and
``apply(model: onnx.ModelProto) -> pipeline.passes.PassResult``: it finds the op's nodes in
the raw tf2onnx graph by their pattern (never by one model's layer names), rewrites them
into ONNX that ONNX Runtime still runs, and returns the new graph with the number of
rewrites.  Patches run after the built-in passes, in module-name order; each is checked like
every pass (ONNX checker, then ONNX Runtime outputs before and after must agree).  Users put
patches written the same way in a directory and pass ``--patches DIR``.
"""
