"""Code generation: the imported graph written out as a readable ``torch_model/`` package.

``emit_package`` turns the import stage's ``torch.fx.GraphModule`` (onnx2torch + our
converters, TF variables already adopted as named parameters) into ``model.py`` -- one
``nn.Module`` class named after the Keras model, ``torch.nn`` modules named after the Keras
layers, one statement per op in ``forward`` -- plus ``weights.safetensors`` and an
``__init__.py`` with ``load_model()``.  The package imports torch (and safetensors) only.

Modules: :mod:`~pipeline.to_torch.codegen.naming` (the one sanitising rule, temporaries named after
layers), :mod:`~pipeline.to_torch.codegen.simplify` (exact clean-ups of the graph),
:mod:`~pipeline.to_torch.codegen.literals` (constants as Python source),
:mod:`~pipeline.to_torch.codegen.modules` (constructors of modules with weights),
:mod:`~pipeline.to_torch.codegen.emit` (the walk that writes the class) and
:mod:`~pipeline.to_torch.codegen.package` (the files, and importing them afresh).  The code
form of each module class (one expression) lives with its op in :mod:`pipeline.to_torch.ops`.
"""

from pipeline.to_torch.codegen.package import (
    MODEL_PY,
    PACKAGE,
    WEIGHTS,
    CodegenFailed,
    EmittedPackage,
    emit_package,
    import_package,
    keras_layout,
    load_generated,
    renamed_entries,
)

__all__ = [
    "MODEL_PY",
    "PACKAGE",
    "WEIGHTS",
    "CodegenFailed",
    "EmittedPackage",
    "emit_package",
    "import_package",
    "keras_layout",
    "load_generated",
    "renamed_entries",
]
