"""TF variables become named ``nn.Parameter``s (trainable) or buffers (non-trainable).

onnx2torch keeps every ONNX initializer as an anonymous buffer (``initializers.onnx_initializer_3``),
so a Dense MLP arrives with no parameter at all.  This module finds, for every TF variable,
the torch tensor that holds it, **by value**: the tensor equals the variable's value up to a
layout transform (identity, a transpose or axis permutation such as Conv's HWIO→OIHW, a
reshape, or a transpose with gate blocks reordered as in recurrent kernels).  Matching by value
works whatever the layers are called; names are used only to attach a vanished all-zero bias
to its Dense layer (tf2onnx drops an ``Add`` of zeros).

Then the module is rewritten so it reads like a hand-written one:
- ``MatMul(x, kernel) [+ Add(bias)]`` on a Dense kernel becomes ``nn.Linear`` (weight =
  kernel transposed), a missing zero bias restored as a zero parameter;
- every matched tensor lives at the TF variable's path: ``dense_1/kernel`` ends up at
  ``dense_1.weight`` (Linear) or ``dense_1.kernel``; a module that owns a TF layer's tensors
  (``nn.Conv2d``, ``nn.LSTM``, a patch's module) is moved to that layer's path;
- trainable variables become ``nn.Parameter`` (``requires_grad=True``), non-trainable ones
  (BatchNorm moving statistics, ``trainable=False`` weights) buffers.

The result is a table (:class:`ParameterEntry`) that ``report.json`` carries as ``parameters``.

One file on purpose: it is one search (each variable under every layout transform, then the
Linear fusion and the table that depend on it); the provenance rewrite (issue 10) replaces it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
from onnx2torch.node_converters.matmul import OnnxMatMul

UNMAPPED = "unmapped"


@dataclass
class ParameterEntry:
    """One TF variable and where it lives in torch.

    ``transform`` maps the TF value to the torch tensor: ``identity``, ``transpose(1,0)``,
    ``permute(3,2,0,1)``, ``reshape``, ``transpose(1,0),gates(1,0,2)`` (a transpose with
    gate blocks reordered); ``zeros`` for a vanished zero bias restored; ``unmapped`` when no
    torch tensor holds the variable (e.g. BatchNorm folded into a convolution).  A row with
    ``tf_name`` None is a torch-only slot (``nn.LSTM``'s second bias): zero and frozen.
    """

    tf_name: str | None
    torch_name: str | None
    shape: list[int]
    trainable: bool
    transform: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the report's ``parameters`` rows)."""
        return {
            "tf_name": self.tf_name,
            "torch_name": self.torch_name,
            "shape": self.shape,
            "trainable": self.trainable,
            "transform": self.transform,
            "note": self.note,
        }


@dataclass(frozen=True)
class _Slot:
    """A torch tensor: ``owner.attr``; ``get_attr`` nodes read it when owned by onnx2torch's
    initializer container."""

    owner_path: str
    attr: str

    @property
    def name(self) -> str:
        return f"{self.owner_path}.{self.attr}" if self.owner_path else self.attr


# ---------------------------------------------------------------------------- transforms


def _block_reorders(array: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Gate-block reorders along axis 0 (recurrent weights stack 3 or 4 gates)."""
    for blocks in (4, 3):
        if array.shape[0] % blocks:
            continue
        parts = np.split(array, blocks, axis=0)
        for order in itertools.permutations(range(blocks)):
            if order != tuple(range(blocks)):
                yield f"gates{order}".replace(" ", ""), np.concatenate([parts[i] for i in order])


def apply_transform(value: np.ndarray, transform: str, shape: Sequence[int]) -> np.ndarray:
    """Apply a transform label of :class:`ParameterEntry` to a TF value (or its gradient);
    ``shape`` is the torch tensor's (what ``reshape`` reshapes to)."""
    out = np.asarray(value)
    if transform == "reshape":
        return out.reshape(tuple(shape))
    for step in re.findall(r"[a-z]+\([0-9,]*\)|[a-z]+", transform):
        kind, _, args = step.partition("(")
        numbers = [int(a) for a in args.rstrip(")").split(",") if a]
        if kind == "row":
            out = out[numbers[0]]
        elif kind in ("transpose", "permute"):
            out = np.transpose(out, numbers)
        elif kind == "gates":
            parts = np.split(out, len(numbers), axis=0)
            out = np.concatenate([parts[i] for i in numbers])
    return out


def _candidates(
    value: np.ndarray, target_shape: tuple[int, ...]
) -> Iterator[tuple[str, np.ndarray]]:
    """(label, transformed value) for every layout transform giving ``target_shape``."""
    if value.shape == target_shape:
        yield "identity", value
    for perm in itertools.permutations(range(value.ndim)):
        if perm == tuple(range(value.ndim)):
            continue
        moved = np.transpose(value, perm)
        if moved.shape == target_shape:
            label = "transpose(1,0)" if perm == (1, 0) else f"permute{perm}".replace(" ", "")
            yield label, moved
    if value.ndim == 1 and value.shape == target_shape:
        yield from _block_reorders(value)
    if value.ndim == 2 and value.T.shape[0] == target_shape[0] and value.T.shape == target_shape:
        for label, reordered in _block_reorders(value.T):
            yield f"transpose(1,0),{label}", reordered
    if value.shape != target_shape and value.size == int(np.prod(target_shape)):
        yield "reshape", value.reshape(target_shape)


def _match(value: np.ndarray, tensor: np.ndarray) -> str | None:
    if value.size != tensor.size or value.dtype != tensor.dtype:
        return None
    for label, candidate in _candidates(value, tensor.shape):
        if np.array_equal(candidate, tensor):
            return label
    return None


def _match_rows(
    value: np.ndarray,
    by_size: dict[int, list[tuple[_Slot, np.ndarray, float]]],
    claimed: set[_Slot],
) -> list[tuple[_Slot, str]] | None:
    found: list[tuple[_Slot, str]] = []
    for row_index, row in enumerate(value):
        hit = None
        for slot, array, _ in by_size.get(row.size, []):
            if slot in claimed or any(slot == f for f, _ in found):
                continue
            label = _match(row, array)
            if label is not None:
                hit = (slot, f"row({row_index})" + ("" if label == "identity" else f",{label}"))
                break
        if hit is None:
            return None
        found.append(hit)
    return found


# ------------------------------------------------------------------------ module surgery


def _sanitize(part: str) -> str:
    part = re.sub(r"\W", "_", part.removesuffix(":0"))
    return part if part and not part[0].isdigit() else f"_{part}"


def _tf_module_path(tf_name: str) -> tuple[str, str]:
    """``a/b/kernel`` → (``a.b``, ``kernel``), each part a valid attribute name."""
    parts = [_sanitize(p) for p in tf_name.split("/") if p]
    return ".".join(parts[:-1]) or "tf", parts[-1]


def _get_module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    return root.get_submodule(path) if path else root


def _ensure_module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            module.add_module(part, torch.nn.Module())
        child = getattr(module, part)
        if not isinstance(child, torch.nn.Module):
            raise ValueError(f"{path}: {part} is not a module")
        module = child
    return module


def _free_path(root: torch.nn.Module, path: str) -> str:
    """``path`` if nothing lives there yet, else ``path_1``, ``path_2``, ..."""
    candidate, n = path, 0
    while True:
        try:
            root.get_submodule(candidate)
        except AttributeError:
            owner, _, attr = candidate.rpartition(".")
            try:
                parent = _get_module(root, owner)
            except AttributeError:
                return candidate
            if not hasattr(parent, attr):
                return candidate
        n += 1
        candidate = f"{path}_{n}"


def _set_tensor(module: torch.nn.Module, attr: str, value: torch.Tensor, trainable: bool) -> None:
    if hasattr(module, attr):
        delattr(module, attr)
    if trainable:
        module.register_parameter(attr, torch.nn.Parameter(value.detach().clone()))
    else:
        module.register_buffer(attr, value.detach().clone())


def _slots(module: torch.fx.GraphModule) -> dict[_Slot, torch.Tensor]:
    found: dict[_Slot, torch.Tensor] = {}
    for owner_path, owner in module.named_modules():
        for attr, tensor in [
            *owner.named_parameters(recurse=False),
            *owner.named_buffers(recurse=False),
        ]:
            if tensor is not None and tensor.is_floating_point():
                found[_Slot(owner_path, attr)] = tensor
    return found


def _get_attr_users(module: torch.fx.GraphModule, slot: _Slot) -> list[torch.fx.Node]:
    return [n for n in module.graph.nodes if n.op == "get_attr" and n.target == slot.name]


# ------------------------------------------------------------------------------ Linear


def _fuse_linear(
    module: torch.fx.GraphModule,
    kernel_node: torch.fx.Node,
    matmul: torch.fx.Node,
    bias_node: torch.fx.Node | None,
    add: torch.fx.Node | None,
    through: torch.fx.Node,
    layer_path: str,
    zero_bias: bool,
) -> tuple[str, torch.nn.Linear]:
    kernel = (
        module.get_buffer(str(kernel_node.target))
        if _is_buffer(module, kernel_node)
        else module.get_parameter(str(kernel_node.target))
    )
    in_features, out_features = kernel.shape
    linear = torch.nn.Linear(
        int(in_features), int(out_features), bias=bias_node is not None or zero_bias
    )
    with torch.no_grad():
        linear.weight.copy_(kernel.T)
        if bias_node is not None:
            linear.bias.copy_(_tensor_of(module, bias_node))
        elif zero_bias:
            linear.bias.zero_()
    path = _free_path(module, layer_path)
    owner, _, attr = path.rpartition(".")
    (_ensure_module(module, owner) if owner else module).add_module(attr, linear)
    with module.graph.inserting_before(matmul):
        new = module.graph.call_module(path, (matmul.args[0],))
    matmul.replace_all_uses_with(new)
    module.graph.erase_node(matmul)
    if add is not None:
        # The Add now only re-adds nothing: its output is the (reshaped) Linear output.
        add.replace_all_uses_with(through if through is not matmul else new)
        module.graph.erase_node(add)
    return path, linear


def _is_buffer(module: torch.nn.Module, node: torch.fx.Node) -> bool:
    return str(node.target) in dict(module.named_buffers())


def _tensor_of(module: torch.nn.Module, node: torch.fx.Node) -> torch.Tensor:
    name = str(node.target)
    tensors = dict(module.named_buffers()) | dict(module.named_parameters())
    return tensors[name]


def _is_call(module: torch.fx.GraphModule, node: torch.fx.Node, kind: type) -> bool:
    return node.op == "call_module" and isinstance(module.get_submodule(str(node.target)), kind)


def _is_reshape(module: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    return (
        node.op == "call_module"
        and "Reshape" in type(module.get_submodule(str(node.target))).__name__
    )


def _is_add(module: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    return _is_call(module, node, OnnxBinaryMathOperation) and (
        module.get_submodule(str(node.target)).math_op_function is torch.add
    )


# ------------------------------------------------------------------------------- driver


def _drop_unused(module: torch.fx.GraphModule) -> None:
    module.graph.eliminate_dead_code()
    module.delete_all_unused_submodules()
    read = {str(n.target) for n in module.graph.nodes if n.op == "get_attr"}
    initializers = getattr(module, "initializers", None)
    if isinstance(initializers, torch.nn.Module):
        for name in [n for n, _ in initializers.named_buffers(recurse=False)]:
            if f"initializers.{name}" not in read:
                delattr(initializers, name)
    module.recompile()


def adopt_tf_variables(
    module: torch.fx.GraphModule,
    variables: Sequence[dict[str, Any]],
    values: Sequence[np.ndarray],
) -> list[ParameterEntry]:
    """Rewrite ``module`` in place so every TF variable is a named parameter or buffer.

    ``variables`` are the TF worker's metadata (``path``, ``trainable``) and ``values`` their
    values, in the same order.  Returns one :class:`ParameterEntry` per TF variable.
    """
    # Candidates are pre-filtered on size and a permutation-invariant fingerprint (the sum of
    # absolute values) so that a ResNet's hundreds of variables do not try every transform
    # against every tensor.
    by_size: dict[int, list[tuple[_Slot, np.ndarray, float]]] = {}
    for slot, tensor in _slots(module).items():
        array = tensor.detach().cpu().numpy()
        by_size.setdefault(array.size, []).append(
            (slot, array, float(np.abs(array).sum(dtype=np.float64)))
        )
    claimed: set[_Slot] = set()
    matches: dict[int, list[tuple[_Slot, str]]] = {}
    for index, value in enumerate(values):
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating):
            continue
        fingerprint = float(np.abs(value).sum(dtype=np.float64))
        for slot, array, other in by_size.get(value.size, []):
            if slot in claimed or abs(other - fingerprint) > 1e-6 * max(fingerprint, 1.0):
                continue
            label = _match(value, array)
            if label is not None:
                claimed.add(slot)
                matches.setdefault(index, []).append((slot, label))
        if index not in matches and value.ndim == 2 and value.shape[0] <= 4:
            # A stacked variable split across torch tensors, e.g. Keras GRU's (2, 3H) bias
            # → nn.GRU's bias_ih and bias_hh (gates reordered).
            rows = _match_rows(value, by_size, claimed)
            if rows is not None:
                claimed.update(slot for slot, _ in rows)
                matches[index] = rows

    entries: dict[int, ParameterEntry] = {}
    _linear_layers(module, variables, values, matches, entries)

    split_rows: dict[int, list[ParameterEntry]] = {}
    for index, found in matches.items():
        if index in entries:
            continue
        meta = variables[index]
        trainable = bool(meta["trainable"])
        if found[0][1].startswith("row("):
            placed = [
                _place(module, slot, label, meta["path"], trainable, []) for slot, label in found
            ]
            entries[index], split_rows[index] = placed[0], placed[1:]
            continue
        slot, label = found[0]
        entries[index] = _place(module, slot, label, meta["path"], trainable, found[1:])

    _move_owner_modules(module, [*entries.values(), *itertools.chain(*split_rows.values())])
    _drop_unused(module)
    result: list[ParameterEntry] = []
    for index, meta in enumerate(variables):
        result.extend(split_rows.get(index, []))
        result.append(
            entries.get(index)
            or ParameterEntry(
                meta["path"],
                None,
                list(meta["shape"]),
                bool(meta["trainable"]),
                UNMAPPED,
                "no torch tensor holds this value (folded into another op by tf2onnx?)",
            )
        )
    return result + _torch_only_slots(module, result)


def _place(
    module: torch.fx.GraphModule,
    slot: _Slot,
    label: str,
    tf_name: str,
    trainable: bool,
    duplicates: Sequence[tuple[_Slot, str]],
) -> ParameterEntry:
    owner_module = _get_module(module, slot.owner_path)
    tensor: torch.Tensor | None = owner_module._parameters.get(slot.attr)
    if tensor is None:
        tensor = owner_module._buffers[slot.attr]
    assert tensor is not None
    readers = _get_attr_users(module, slot)
    note = ""
    if readers or slot.owner_path == "initializers":
        # A free-standing initializer: move it to the TF variable's path.
        owner_path, attr = _tf_module_path(tf_name)
        path = _free_path(module, f"{owner_path}.{attr}")
        owner_path, _, attr = path.rpartition(".")
        _set_tensor(_ensure_module(module, owner_path), attr, tensor, trainable)
        for node in readers:
            node.target = path
        for other, other_label in duplicates:
            if other_label == label:  # the same variable used twice: read one tensor
                for node in _get_attr_users(module, other):
                    node.target = path
        delattr(_get_module(module, slot.owner_path), slot.attr)
        torch_name = path
    else:
        # A tensor owned by a converted module (nn.Conv2d, nn.LSTM, a patch's module).
        owner = _get_module(module, slot.owner_path)
        is_param = slot.attr in owner._parameters
        if is_param != trainable:
            _set_tensor(owner, slot.attr, tensor, trainable)
        if not trainable and is_param:
            note = "kept as a buffer: the TF variable is not trainable"
        torch_name = slot.name
        if duplicates:
            note = f"also held by {', '.join(d.name for d, _ in duplicates)}"
    return ParameterEntry(tf_name, torch_name, list(tensor.shape), trainable, label, note)


def _common_layer_path(tf_names: Sequence[str]) -> str:
    layer_paths = [name.split("/")[:-1] for name in tf_names]
    common: list[str] = []
    for parts in zip(*layer_paths, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return ".".join(_sanitize(p) for p in common)


def _move_owner_modules(module: torch.fx.GraphModule, entries: Sequence[ParameterEntry]) -> None:
    """Move a converted module (``nn.Conv2d``, an ``nn.LSTM`` wrapper, a patch's module) whose
    tensors all come from one TF layer to that layer's path (the common path of its
    variables), so ``conv/kernel`` reads ``conv.weight`` and ``bilstm/forward_lstm/...``
    lives under ``bilstm``."""
    call_targets = {str(n.target) for n in module.graph.nodes if n.op == "call_module"}
    owned: dict[str, list[ParameterEntry]] = {}
    for entry in entries:
        if entry.tf_name and entry.torch_name and entry.transform != "zeros":
            head = entry.torch_name.split(".")[0]
            if head in call_targets and head != "initializers":
                owned.setdefault(head, []).append(entry)
    for head, group in owned.items():
        wanted = _common_layer_path([str(e.tf_name) for e in group])
        if not wanted or wanted == head:
            continue
        target = _free_path(module, wanted)
        child = module.get_submodule(head)
        parent_path, _, attr = target.rpartition(".")
        (_ensure_module(module, parent_path) if parent_path else module).add_module(attr, child)
        for node in module.graph.nodes:
            if node.op == "call_module" and node.target == head:
                node.target = target
        delattr(module, head)
        for entry in group:
            entry.torch_name = target + str(entry.torch_name)[len(head) :]


def _torch_only_slots(
    module: torch.nn.Module, entries: Sequence[ParameterEntry]
) -> list[ParameterEntry]:
    """Parameters no TF variable maps to that are all zero (``nn.LSTM``'s recurrent bias,
    which Keras lacks): frozen, and listed so the table says so."""
    placed = {e.torch_name for e in entries}
    extra = []
    for name, parameter in module.named_parameters():
        if name in placed or parameter.numel() == 0 or bool(parameter.detach().any()):
            continue
        parameter.requires_grad_(False)
        extra.append(
            ParameterEntry(
                None,
                name,
                list(parameter.shape),
                False,
                "zeros",
                "torch has this slot and Keras does not: zero and frozen",
            )
        )
    return extra


def _linear_layers(
    module: torch.fx.GraphModule,
    variables: Sequence[dict[str, Any]],
    values: Sequence[np.ndarray],
    matches: dict[int, list[tuple[_Slot, str]]],
    entries: dict[int, ParameterEntry],
) -> None:
    """Dense kernels used by one MatMul become ``nn.Linear`` (bias from the following Add)."""
    index_of_slot = {slot.name: (i, label) for i, found in matches.items() for slot, label in found}
    path_index = {meta["path"]: i for i, meta in enumerate(variables)}
    for matmul in list(module.graph.nodes):
        if not _is_call(module, matmul, OnnxMatMul) or len(matmul.args) != 2:
            continue
        kernel_node = matmul.args[1]
        if not isinstance(kernel_node, torch.fx.Node) or kernel_node.op != "get_attr":
            continue
        hit = index_of_slot.get(str(kernel_node.target))
        if hit is None or hit[1] != "identity" or len(matches[hit[0]]) != 1:
            continue
        k_index = hit[0]
        if np.asarray(values[k_index]).ndim != 2 or len(kernel_node.users) != 1:
            continue
        layer = variables[k_index]["path"].rpartition("/")[0]
        bias_node = add = None
        b_index: int | None = None
        users = list(matmul.users)
        through = matmul
        if len(users) == 1 and _is_reshape(module, users[0]) and len(users[0].users) == 1:
            # Keras Dense on a sequence (Tensordot): MatMul on (-1, in), Reshape back, Add
            # bias; the bias commutes with a reshape that keeps the last dim.
            through = users[0]
            users = list(through.users)
        if len(users) == 1 and _is_add(module, users[0]):
            other = [a for a in users[0].args if a is not through]
            if (
                len(other) == 1
                and isinstance(other[0], torch.fx.Node)
                and other[0].op == "get_attr"
            ):
                b_hit = index_of_slot.get(str(other[0].target))
                if (
                    b_hit is not None
                    and b_hit[1] == "identity"
                    and np.asarray(values[b_hit[0]]).ndim == 1
                ):
                    bias_node, add, b_index = other[0], users[0], b_hit[0]
        zero_bias = False
        if bias_node is None:
            # tf2onnx drops the Add of an all-zero bias; the layer's bias variable says so.
            candidate = path_index.get(f"{layer}/bias")
            out_features = np.asarray(values[k_index]).shape[1]
            if (
                candidate is not None
                and candidate not in matches
                and np.asarray(values[candidate]).shape == (out_features,)
                and not np.any(values[candidate])
            ):
                zero_bias, b_index = True, candidate
        path, linear = _fuse_linear(
            module,
            kernel_node,
            matmul,
            bias_node,
            add,
            through,
            ".".join(_sanitize(p) for p in layer.split("/")) or "dense",
            zero_bias,
        )
        k_meta = variables[k_index]
        linear.weight.requires_grad_(bool(k_meta["trainable"]))
        entries[k_index] = ParameterEntry(
            k_meta["path"],
            f"{path}.weight",
            list(linear.weight.shape),
            bool(k_meta["trainable"]),
            "transpose(1,0)",
        )
        if b_index is not None:
            b_meta = variables[b_index]
            linear.bias.requires_grad_(bool(b_meta["trainable"]))
            entries[b_index] = ParameterEntry(
                b_meta["path"],
                f"{path}.bias",
                list(linear.bias.shape),
                bool(b_meta["trainable"]),
                "zeros" if zero_bias else "identity",
                "all-zero bias restored (tf2onnx drops it)" if zero_bias else "",
            )


def count_trainable(
    module: torch.nn.Module, variables: Sequence[dict[str, Any]], entries: Sequence[ParameterEntry]
) -> dict[str, Any]:
    """The trainable-element count check.

    torch's trainable elements (parameters the table does not mark frozen) must equal the sum
    of the TF trainable variables' sizes.  ``status`` is ``full`` when they do and every
    variable has its own torch tensor; ``partial`` when some variables have none (tf2onnx
    folded them, e.g. BatchNorm into the preceding convolution: the module computes the
    same outputs but those layers do not train like Keras's); ``fail`` when every variable
    is placed and the counts still differ.
    """
    frozen = {e.torch_name for e in entries if e.torch_name and not e.trainable}
    torch_count = sum(p.numel() for n, p in module.named_parameters() if n not in frozen)
    tf_count = sum(int(np.prod(v["shape"])) for v in variables if v["trainable"])
    unmapped = [e.tf_name for e in entries if e.torch_name is None]
    equal = tf_count == torch_count
    status = "partial" if unmapped else "full" if equal else "fail"
    return {
        "tf_trainable": tf_count,
        "torch_trainable": int(torch_count),
        "unmapped": len(unmapped),
        "status": status,
        "pass": equal and not unmapped,
    }
