"""Minimal repro of a first divergence: a small ONNX model, its inputs, the reference outputs
and a script that shows the divergence with ONNX Runtime and PyTorch alone (no TensorFlow)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from pipeline.core.compare import Tolerance
from pipeline.core.run_dir import atomic_write_bytes, write_npz

REPO = Path(__file__).resolve().parents[2]

SCRIPT = '''\
"""Minimal repro written by `tf2torch diff`: {pair}, first divergent node {node!r} ({op_type}).

model.onnx holds that node (with the tf2onnx-made nodes feeding it, if any), inputs.npz the
{ref} values of its inputs and expected.npz {ref}'s outputs.  This script runs model.onnx
with ONNX Runtime and with PyTorch (onnx2torch plus the converters tf2torch registers) and
compares each with expected.npz.  TensorFlow is not needed.  Exit code 1: the divergence
reproduces.

    python repro.py
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

HERE = Path(__file__).resolve().parent
CONFIG = json.loads((HERE / "repro.json").read_text())
REF = CONFIG["reference_framework"]
sys.path.insert(0, CONFIG["tf2torch_repo"])  # tf2torch's onnx2torch converters and patches
from pipeline.passes import builtin_patches, load_patch_dir  # noqa: E402
from pipeline.to_torch.importer import import_onnx  # noqa: E402

builtin_patches()
for directory in CONFIG["patch_dirs"]:
    load_patch_dir(Path(directory))

model = onnx.load(str(HERE / "model.onnx"))
with np.load(HERE / "inputs.npz") as npz:
    feed = {{k: npz[k] for k in npz.files}}
with np.load(HERE / "expected.npz") as npz:
    expected = {{k: npz[k] for k in npz.files}}
names = [o.name for o in model.graph.output]

session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
ort_out = dict(zip(names, session.run(names, feed)))
module = import_onnx(model).eval()
with torch.no_grad():
    result = module(*[torch.from_numpy(feed[i.name]) for i in model.graph.input])
result = list(result) if isinstance(result, (list, tuple)) else [result]
torch_out = {{n: t.numpy() for n, t in zip(names, result)}}

diverges = False
for name in names:
    atol, rtol = CONFIG["tolerances"][name]
    ref = expected[name].astype(np.float64)
    print(f"{{name}}  (atol {{atol:g}}, rtol {{rtol:g}})")
    for label, other in (("onnxruntime", ort_out[name]), ("torch", torch_out[name])):
        other = other.astype(np.float64)
        if other.shape != ref.shape:
            print(f"  {{REF:>11}} vs {{label:<11}}: shape {{list(ref.shape)}} vs {{list(other.shape)}}")
            diverges = diverges or label == CONFIG["other_framework"]
            continue
        diff = np.abs(other - ref)
        bad = ~(diff <= atol + rtol * np.abs(ref))
        print(f"  {{REF:>11}} vs {{label:<11}}: max abs {{diff.max():.3e}}, "
              f"{{100 * bad.mean():.2f}}% of elements beyond tolerance")
        if label == CONFIG["other_framework"] and bad.any():
            diverges = True
print("divergence reproduces" if diverges else "divergence does NOT reproduce")
sys.exit(1 if diverges else 0)
'''

_FRAMEWORK = {"tf": "TensorFlow", "ort": "onnxruntime", "torch": "torch"}


def write_repro(
    directory: Path,
    model: onnx.ModelProto,
    feed: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    *,
    pair: str,
    node: str,
    op_type: str,
    tolerances: Mapping[str, Tolerance],
    patch_dirs: Sequence[Path],
) -> Path:
    """Write ``model.onnx``, ``inputs.npz``, ``expected.npz``, ``repro.json`` and
    ``repro.py`` into ``directory`` (created); return it."""
    directory.mkdir(parents=True, exist_ok=True)
    ref, _, other = pair.partition("-")
    atomic_write_bytes(directory / "model.onnx", model.SerializeToString())
    write_npz(directory / "inputs.npz", dict(feed))
    write_npz(directory / "expected.npz", dict(expected))
    config = {
        "pair": pair,
        "node": node,
        "reference": ref,
        "reference_framework": _FRAMEWORK[ref],
        "other_framework": _FRAMEWORK[other],
        "tolerances": {k: [t.atol, t.rtol] for k, t in tolerances.items()},
        "tf2torch_repo": str(REPO),
        "patch_dirs": [str(p) for p in patch_dirs],
    }
    atomic_write_bytes(directory / "repro.json", (json.dumps(config, indent=2) + "\n").encode())
    script = SCRIPT.format(pair=pair, node=node, op_type=op_type, ref=_FRAMEWORK[ref])
    atomic_write_bytes(directory / "repro.py", script.encode())
    return directory
