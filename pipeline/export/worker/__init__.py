"""The TensorFlow worker: every piece of TensorFlow work runs here, in its own process.

Run as ``python -m pipeline.export.worker REQUEST.json``.  TensorFlow may not share a process
with torch (importing torchvision after TensorFlow segfaults with the pinned versions, and on
a GPU TensorFlow takes all device memory), so the orchestrator writes a JSON request, this
process loads the model, reads its signature, prepares the inputs, exports ONNX with tf2onnx
and runs the TF reference, and answers with a JSON result beside the ``.npz`` artifacts.

A failure the user can act on is answered as ``{"ok": false, "kind": ..., "message": ...}``
with exit code 3; anything unexpected gets the same shape with kind ``worker_crash`` and the
traceback goes to stderr, which the orchestrator keeps in ``tf_worker.log``.
"""
