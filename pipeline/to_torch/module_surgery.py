"""Moving tensors and modules around an onnx2torch ``GraphModule``: slots (``owner.attr``),
module paths named after TF variables, FX node tests, dropping what is unused."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation


@dataclass(frozen=True)
class Slot:
    """A torch tensor: ``owner.attr``."""

    owner_path: str
    attr: str

    @property
    def name(self) -> str:
        return f"{self.owner_path}.{self.attr}" if self.owner_path else self.attr


# ------------------------------------------------------------------------ module surgery


def sanitize_name(part: str) -> str:
    part = re.sub(r"\W", "_", part.removesuffix(":0"))
    return part if part and not part[0].isdigit() else f"_{part}"


def tf_module_path(tf_name: str) -> tuple[str, str]:
    """``a/b/kernel`` → (``a.b``, ``kernel``), each part a valid attribute name."""
    parts = [sanitize_name(p) for p in tf_name.split("/") if p]
    return ".".join(parts[:-1]) or "tf", parts[-1]


def get_module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    return root.get_submodule(path) if path else root


def ensure_module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            module.add_module(part, torch.nn.Module())
        child = getattr(module, part)
        if not isinstance(child, torch.nn.Module):
            raise ValueError(f"{path}: {part} is not a module")
        module = child
    return module


def free_path(root: torch.nn.Module, path: str) -> str:
    """``path`` if nothing lives there yet, else ``path_1``, ``path_2``, ..."""
    candidate, n = path, 0
    while True:
        try:
            root.get_submodule(candidate)
        except AttributeError:
            owner, _, attr = candidate.rpartition(".")
            try:
                parent = get_module(root, owner)
            except AttributeError:
                return candidate
            if not hasattr(parent, attr):
                return candidate
        n += 1
        candidate = f"{path}_{n}"


def slot_tensor(module: torch.nn.Module, slot: Slot) -> torch.Tensor:
    owner = get_module(module, slot.owner_path)
    found: torch.Tensor | None = owner._parameters.get(slot.attr)
    if found is None:
        found = owner._buffers.get(slot.attr)
    assert found is not None, slot.name
    return found


def set_slot_tensor(
    module: torch.nn.Module, attr: str, value: torch.Tensor, trainable: bool
) -> None:
    if attr in module._parameters or attr in module._buffers or hasattr(module, attr):
        delattr(module, attr)
    if trainable:
        module.register_parameter(attr, torch.nn.Parameter(value.detach().clone()))
    else:
        module.register_buffer(attr, value.detach().clone())


def all_slots(module: torch.nn.Module) -> dict[Slot, torch.Tensor]:
    found: dict[Slot, torch.Tensor] = {}
    for owner_path, owner in module.named_modules(remove_duplicate=False):
        for attr, tensor in [*owner._parameters.items(), *owner._buffers.items()]:
            if tensor is not None and tensor.is_floating_point():
                found.setdefault(Slot(owner_path, attr), tensor)
    return found


def get_attr_users(module: torch.fx.GraphModule, slot: Slot) -> list[torch.fx.Node]:
    return [n for n in module.graph.nodes if n.op == "get_attr" and n.target == slot.name]


def is_call(module: torch.fx.GraphModule, node: torch.fx.Node, kind: type) -> bool:
    return node.op == "call_module" and isinstance(module.get_submodule(str(node.target)), kind)


def is_reshape(module: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    return (
        node.op == "call_module"
        and "Reshape" in type(module.get_submodule(str(node.target))).__name__
    )


def is_add(module: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    return is_call(module, node, OnnxBinaryMathOperation) and (
        module.get_submodule(str(node.target)).math_op_function is torch.add
    )


def drop_unused(module: torch.fx.GraphModule) -> None:
    module.graph.eliminate_dead_code()
    module.delete_all_unused_submodules()
    read = {str(n.target) for n in module.graph.nodes if n.op == "get_attr"}
    initializers = getattr(module, "initializers", None)
    if isinstance(initializers, torch.nn.Module):
        for name in [n for n, _ in initializers.named_buffers(recurse=False)]:
            if f"initializers.{name}" not in read:
                delattr(initializers, name)
    module.recompile()
