"""ONNX's own node conformance tests, run through our importer and code generator.

``onnx.backend.test.case.node.collect_testcases()`` builds ONNX's backend node tests in memory
(model, inputs, expected outputs).  Each case whose op the importer has a converter for is
imported (:func:`pipeline.to_torch.importer.import_onnx`), run and compared, then written out
as a ``torch_model`` package (:func:`pipeline.to_torch.codegen.emit_package`), loaded afresh
and compared again.  A failure is a finding about that op, not about this package.

:mod:`conformance.cases` collects and screens the cases, :mod:`conformance.check` runs one,
:mod:`conformance.run` drives them (``python -m conformance``, ``make conformance``) and
:mod:`conformance.report` writes ``docs/results/conformance.{md,json}``;
:mod:`conformance.ops` lists the ops tf2onnx emits for Keras models (:data:`KERAS_OPS`).
"""
