"""``--fold-for-inference``: BatchNormalization folded into the convolution before it.

The standard inference fusion (onnxscript's ``fuse_batchnorm`` rules: ``W*gamma/sqrt(var+eps)``
and ``(b - mean)*gamma/sqrt(var+eps) + beta``) for ``Conv``, ``ConvTranspose`` and ``Gemm``.  Folded values are no
Keras variable any more: the provenance record drops the convolution's weight and bias and
lists all six variables under ``folded`` with the node they went into, so the report can name
them and mark the run inference-only.  Only run on request; by default BatchNorm stays a
module whose variables train like Keras's.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass
from onnxscript.rewriter import pattern
from onnxscript.rewriter.rules.common import (
    fuse_batchnorm_into_conv_rule,
    fuse_batchnorm_into_conv_transpose_rule,
    fuse_batchnorm_into_gemm_rule,
)

from pipeline.passes import variables
from pipeline.passes.base import PassResult

_FOLDABLE = {"Conv", "ConvTranspose", "Gemm"}


class FoldBatchNormPass:
    """Fold BatchNormalization into the Conv/ConvTranspose/Gemm before it (inference only)."""

    name = "fold_batch_norm"
    description = (
        "--fold-for-inference: BatchNormalization folded into the preceding Conv, "
        "ConvTranspose or Gemm (the folded variables listed in the provenance record)"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of BatchNorms folded."""
        if not any(n.op_type == "BatchNormalization" for n in model.graph.node):
            return PassResult(model, 0)
        ir_model = ir.serde.deserialize_model(model)
        record = variables.record_of(ir_model)
        candidates = []
        for node in ir_model.graph:
            producer = node.inputs[0].producer() if node.inputs and node.inputs[0] else None
            if node.op_type != "BatchNormalization" or producer is None:
                continue
            if producer.op_type not in _FOLDABLE:
                continue
            held = [
                (str(v.name), variables.variable_of(record, v))
                for v in [*producer.inputs[1:], *node.inputs[1:]]
                if v is not None
            ]
            candidates.append((node, producer, held))
        rules = pattern.RewriteRuleSet(
            [
                fuse_batchnorm_into_conv_rule,
                fuse_batchnorm_into_conv_transpose_rule,
                fuse_batchnorm_into_gemm_rule,
            ]
        )
        changes = int(rules.apply_to_model(ir_model))
        if changes == 0:
            return PassResult(model, 0)
        remaining = {id(n) for n in ir_model.graph}
        for node, producer, held in candidates:
            if id(node) in remaining:
                continue
            into = producer.name or producer.op_type
            for name, path in held:
                if path is not None:
                    record.folded[path] = f"{producer.op_type} {into}"
                # The rules reuse the weight's name for the folded weight: not a variable.
                record.initializers.pop(name, None)
        RemoveUnusedNodesPass()(ir_model)
        variables.save(ir_model, record)
        return PassResult(ir.serde.serialize_model(ir_model), changes)
