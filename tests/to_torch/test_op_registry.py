"""Every module class the importer can produce has a code form, or is refused with a reason;
every ONNX op the pipeline handles has exactly one home in ``pipeline/to_torch/ops/``.

"Classes the importer can produce": every ``nn.Module`` subclass defined in onnx2torch's
``node_converters`` modules and in ``pipeline.to_torch.ops``, plus the ``torch.nn`` classes
that onnx2torch's converters and our op modules instantiate (``nn.X`` in their source).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import onnx2torch.node_converters
import pytest
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY
from torch import nn

import pipeline.to_torch.ops
from pipeline.to_torch.ops import handled_ops, registry
from pipeline.to_torch.ops.registry import REFUSED, TRANSLATORS
from pipeline.to_torch.ops.slice import StaticSlice


def _submodules(package: ModuleType) -> list[ModuleType]:
    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
    ]


def _defined_classes(module: ModuleType) -> set[type]:
    return {
        cls
        for cls in vars(module).values()
        if inspect.isclass(cls) and issubclass(cls, nn.Module) and cls.__module__ == module.__name__
    }


def _instantiated_nn_classes(module: ModuleType) -> set[type]:
    """``torch.nn`` module classes named as ``nn.X`` or ``torch.nn.X`` in ``module``'s source."""
    tree = ast.parse(Path(inspect.getfile(module)).read_text())
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        is_nn = (isinstance(owner, ast.Name) and owner.id == "nn") or (
            isinstance(owner, ast.Attribute)
            and owner.attr == "nn"
            and isinstance(owner.value, ast.Name)
            and owner.value.id == "torch"
        )
        cls = getattr(nn, node.attr, None) if is_nn else None
        if inspect.isclass(cls) and issubclass(cls, nn.Module) and cls is not nn.Module:
            found.add(cls)
    return found


def producible_classes() -> set[type]:
    """Every module class the importer (onnx2torch + our ops) can put in the graph."""
    classes: set[type] = set()
    for package in (onnx2torch.node_converters, pipeline.to_torch.ops):
        for module in _submodules(package):
            classes |= _defined_classes(module) | _instantiated_nn_classes(module)
    return classes


def missing_code_forms(
    classes: set[type], translators: dict[type, object], refused: dict[type, str]
) -> list[str]:
    """Names of ``classes`` with neither a code form nor a refusal."""
    return sorted(c.__qualname__ for c in classes if c not in translators and c not in refused)


def test_enumeration_finds_the_classes() -> None:
    # Guard against an enumeration that silently finds nothing (and so never fails).
    classes = producible_classes()
    assert {StaticSlice, nn.Conv2d, nn.LSTM} <= classes
    assert len(classes) > 80


def test_every_producible_class_has_a_code_form_or_is_refused() -> None:
    assert missing_code_forms(producible_classes(), TRANSLATORS, REFUSED) == []


def test_a_missing_code_form_is_caught() -> None:
    # The check must be able to fail: drop one code form and it reports that class.
    without_slice = {c: f for c, f in TRANSLATORS.items() if c is not StaticSlice}
    assert missing_code_forms(producible_classes(), without_slice, REFUSED) == ["StaticSlice"]


def test_refused_classes_have_no_code_form_and_a_reason() -> None:
    # A class that gained a code form leaves REFUSED.
    assert [c.__name__ for c in REFUSED if c in TRANSLATORS] == []
    assert all(reason.strip() for reason in REFUSED.values())


def test_every_class_an_op_produces_is_covered() -> None:
    for op_type, entry in handled_ops().items():
        for cls in entry.classes:
            assert cls in TRANSLATORS or cls in REFUSED, f"{op_type}: {cls.__name__}"


def test_each_op_has_one_home() -> None:
    ops = handled_ops()
    assert {"Slice", "Reshape", "LSTM", "Relu", "Conv", "Transpose", "Add"} <= set(ops)
    for op_type, entry in ops.items():
        assert entry.home.startswith("pipeline.to_torch.ops."), op_type
        assert importlib.import_module(entry.home) is not None
        # The converter named is registered: ours, or onnx2torch's for some version.
        registered = {d.operation_type for d in _CONVERTER_REGISTRY}
        assert op_type in registered, op_type
    assert ops["Slice"].converter == "ours"
    assert ops["Slice"].home == "pipeline.to_torch.ops.slice"
    assert ops["Relu"].converter == "onnx2torch"


def test_a_second_home_is_refused() -> None:
    with pytest.raises(ValueError, match="two homes"):
        registry.claim_op("Slice", "pipeline.to_torch.ops.reshape", "onnx2torch", ())
    # The same home claiming again (another version) is fine and changes nothing.
    before = handled_ops()["Slice"]
    registry.claim_op("Slice", before.home, "onnx2torch", before.classes)
    assert handled_ops()["Slice"] == before


def test_our_overrides_all_have_a_home() -> None:
    overridden = {d.operation_type for d in registry._OVERRIDDEN}
    assert overridden and overridden <= set(handled_ops())
    assert all(handled_ops()[op].converter == "ours" for op in overridden)


def test_every_helper_a_code_form_uses_is_registered() -> None:
    # Helpers come from the op modules; each is one complete function definition.
    for name, source in registry.HELPERS.items():
        assert f"def {name}(" in source
