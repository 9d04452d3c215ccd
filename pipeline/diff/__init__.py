"""``tf2torch diff``: where TensorFlow, ONNX Runtime and PyTorch part ways, node by node.

A run directory written by ``convert`` is replayed on its own inputs (``golden.npz``) with
every intermediate tensor of ``model.onnx`` recorded in all three frameworks:

- ONNX Runtime (:mod:`.ort_side`): every node output exposed as a graph output, one run;
- PyTorch (:mod:`.torch_side`): ``model.onnx`` imported again with onnx2torch and our
  converters, every call of a module recorded by an FX interpreter under the ONNX tensor
  names of the node it was converted from (``model.pt2``'s own outputs are checked against
  that fresh import);
- TensorFlow (:mod:`.tf_side`, in the worker :mod:`pipeline.diff.tf_worker`): the tensors
  of the frozen graph tf2onnx converted, fetched by the very names tf2onnx gave the ONNX
  tensors.

:mod:`.localise` compares the three pairs node by node, finds each pair's first divergent
node and checks whether that node (with the tf2onnx-made nodes that feed it) is wrong by
itself, by running it on the reference framework's inputs; :mod:`.repro` writes a minimal
repro; :mod:`.report` writes ``diff.json``, ``diff.html`` and the terminal table.

Importing this package imports neither torch nor TensorFlow: the TF worker lives in it, and
torch (torchvision) imported into a process that has TensorFlow already segfaults.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DiffOptions", "DiffResult", "run_diff"]


def __getattr__(name: str) -> Any:
    # The diff itself imports torch and onnx2torch: load it only when asked for.
    if name in __all__:
        from pipeline.diff import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
