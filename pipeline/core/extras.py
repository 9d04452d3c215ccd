"""Optional dependency groups: what a command needs beyond the base install.

The base install (``pip install tf2torch``) is the TF-free CI gate: ``check --golden-only``,
``load_torch``, ``pipeline.testing`` and generated ``torch_model`` packages.  Everything that
runs TensorFlow needs the ``tf`` extra.  The check looks for the modules without importing
them (importing TensorFlow next to torch is exactly what must never happen here).
"""

from __future__ import annotations

import importlib.util

from pipeline.core.errors import MissingExtraError

TF_MODULES = ("tensorflow", "tf2onnx")
TF_EXTRA = "tf2torch[tf]"


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (found without importing)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or shadowed package counts as absent
            found = False
        if not found:
            missing.append(name)
    return missing


def require_tensorflow(what: str) -> None:
    """Raise :class:`MissingExtraError` (one line, exit 2) when TensorFlow or tf2onnx is not
    installed; ``what`` names the command or feature that needs them."""
    missing = missing_modules(TF_MODULES)
    if missing:
        raise MissingExtraError(
            f"{what} needs TensorFlow ({', '.join(missing)} not installed): "
            f"pip install '{TF_EXTRA}'"
        )
