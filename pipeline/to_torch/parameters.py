"""TF variables become named ``nn.Parameter``s (trainable) or buffers (non-trainable), found
by provenance, never by value.

The ONNX model carries a provenance record (:mod:`pipeline.core.provenance`): which
initializer holds which TF variable, in which layout.  onnx2torch and our converters then
move initializers into modules (``nn.Conv2d.weight``, ``nn.LSTM``'s gate-reordered
``weight_ih_l0``, an anonymous ``initializers.onnx_initializer_3`` buffer).  To follow them
there, the model is imported with every recorded initializer holding *fingerprints*
(:mod:`pipeline.core.fingerprint`: each element of each variable its own unique float) instead
of its value.  Each torch tensor then decodes, element by element, to the variable elements
it holds, which gives the exact layout transform (:func:`describe_index_map`); the real values
are written through that map.  Two variables with equal values can never be confused, and a
variable a converter computed with (folded) is reported as such, not matched by a guess.

Then the module is rewritten so it reads like a hand-written one:

- ``MatMul(x, kernel) [+ Add(bias)]`` on a Dense kernel becomes ``nn.Linear`` (weight = the
  kernel transposed), on any input rank;
- every variable lives at its TF path: ``dense_1/kernel`` ends up at ``dense_1.weight``
  (Linear) or ``dense_1.kernel``; a module that owns a TF layer's tensors (``nn.Conv2d``,
  ``nn.BatchNorm2d``, ``nn.LSTM``, a patch's module) is moved to that layer's path;
- trainable variables become ``nn.Parameter`` (``requires_grad=True``), non-trainable ones
  (BatchNorm moving statistics) buffers; a Keras layer called twice is one module called
  twice, so its variables stay one parameter each;
- a parameter that holds no variable is frozen: a documented torch-only slot (``nn.LSTM``'s
  second bias, zero) is listed in the table with ``tf_name`` None; any other is a constant of
  the TF graph and becomes a buffer.

The result is a table (:class:`ParameterEntry`) that ``report.json`` carries as ``parameters``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from pipeline.core import onnx_io, provenance
from pipeline.core.fingerprint import NOT_A_FINGERPRINT, Fingerprints
from pipeline.core.transforms import apply_transform, describe_index_map
from pipeline.core.weight_store import WeightStore
from pipeline.to_torch.linear_fusion import fuse_linear_layers
from pipeline.to_torch.module_surgery import (
    Slot,
    all_slots,
    drop_unused,
    ensure_module,
    free_path,
    get_attr_users,
    get_module,
    sanitize_name,
    set_slot_tensor,
    slot_tensor,
    tf_module_path,
)

__all__ = [
    "UNMAPPED",
    "Adoption",
    "ParameterEntry",
    "adopt_tf_variables",
    "apply_transform",
    "count_trainable",
    "fingerprinted",
]

UNMAPPED = "unmapped"
CONSTANT = "constant"
TORCH_ONLY_SLOTS = re.compile(r"(^|\.)bias_hh_l\d+(_reverse)?$")
"""Torch parameters Keras has no variable for: ``nn.LSTM``'s second bias (Keras has one)."""


@dataclass
class ParameterEntry:
    """One TF variable and where it lives in torch.

    ``transform`` maps the TF value to the torch tensor (a label of
    :mod:`pipeline.core.transforms`: ``identity``, ``transpose(1,0)``, ``permute(3,2,0,1)``,
    ``transpose(1,0),gates(0,3,1,2)``, ``row(1),gates(1,0,2)``, ``permute(2,3,0,1),reshape``),
    ``unmapped`` when no torch tensor holds the variable (``note`` says why), ``constant`` for
    an integer state variable (nothing to train).  A row with ``tf_name`` None is a
    torch-only slot (``nn.LSTM``'s second bias): zero and frozen.  ``unused`` marks a variable
    the model's outputs never read (a mask token, a head left out of the outputs): it still
    has its own tensor, so the state dict holds every Keras variable, and its gradient is
    zero in both frameworks.
    """

    tf_name: str | None
    torch_name: str | None
    shape: list[int]
    trainable: bool
    transform: str
    note: str = ""
    unused: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the report's ``parameters`` rows)."""
        return {
            "tf_name": self.tf_name,
            "torch_name": self.torch_name,
            "shape": self.shape,
            "trainable": self.trainable,
            "transform": self.transform,
            "note": self.note,
            "unused": self.unused,
        }


_Held = list[tuple[Slot, np.ndarray]]
"""Where one variable's fingerprints are: each torch tensor holding only that variable, with
the flat TF index of each of its elements."""


# ----------------------------------------------------------------------- fingerprinting


def _fingerprints(
    variables: Sequence[Mapping[str, Any]], values: Sequence[np.ndarray]
) -> Fingerprints:
    """Fingerprints for ``variables``: shapes and dtypes from their metadata where it has
    them (the values are then not read: at LLM scale they wait on disk), else the values'."""
    shapes, dtypes = [], []
    for i, meta in enumerate(variables):
        if "shape" in meta and "dtype" in meta:
            shapes.append(tuple(int(d) for d in meta["shape"]))
            dtypes.append(str(meta["dtype"]))
        else:
            value = np.asarray(values[i])
            shapes.append(tuple(value.shape))
            dtypes.append(value.dtype.name)
    return Fingerprints(shapes, dtypes)


def fingerprinted(
    model: onnx.ModelProto, variables: Sequence[Mapping[str, Any]], values: Sequence[np.ndarray]
) -> tuple[onnx.ModelProto, Fingerprints, provenance.Provenance]:
    """A copy of ``model`` whose recorded initializers hold fingerprints of their variables
    (elements no part covers keep their value), the fingerprints, and the model's record."""
    record = provenance.read(model) or provenance.Provenance()
    prints = _fingerprints(variables, values)
    index = {str(v["path"]): i for i, v in enumerate(variables)}
    if len(index) != len(variables):
        # The record, the table and the gradients key variables by path: two variables on
        # one path would write one's fingerprint into the other's tensor.  The TF worker
        # makes paths unique (``pipeline.export.worker.loading.unique_paths``).
        paths = [str(v["path"]) for v in variables]
        twice = sorted({p for p in paths if paths.count(p) > 1})
        raise ValueError(f"variable paths occur more than once: {', '.join(twice[:5])}")
    marked_paths = {
        path
        for path, i in index.items()
        if prints.supported(i) and np.dtype(prints.dtypes[i]).kind == "f"
    }
    copy = onnx_io.copy(model)
    store = WeightStore.holding(copy)  # a stored graph's marks are stored too, one at a time
    for position, tensor in enumerate(copy.graph.initializer):
        parts = [p for p in record.initializers.get(tensor.name, []) if p.variable in marked_paths]
        if not parts:
            continue
        # Each variable's fingerprints are made for the tensors that hold it, then dropped.
        marks = {p.variable: prints.value(index[p.variable]) for p in parts}
        marked = provenance.build_value(onnx_io.array(tensor), parts, marks)
        marked_tensor = numpy_helper.from_array(marked, tensor.name)
        if store is not None:  # before it joins the graph (WeightStore.offload_tensors)
            store.offload_tensors([marked_tensor])
        copy.graph.initializer[position].CopyFrom(marked_tensor)
    return copy, prints, record


# ------------------------------------------------------------------------------ decode


def _decoded(
    module: torch.nn.Module, prints: Fingerprints
) -> tuple[dict[Slot, tuple[np.ndarray, np.ndarray]], dict[int, str]]:
    """Per torch tensor holding fingerprints: (variable, flat index) arrays.  Also, per
    variable whose fingerprints share a tensor with other values, why it is not placed."""
    found: dict[Slot, tuple[np.ndarray, np.ndarray]] = {}
    mixed: dict[int, str] = {}
    for slot, tensor in all_slots(module).items():
        array = tensor.detach().cpu().numpy()
        owner, flat = prints.decode(array)
        present = np.unique(owner[owner != NOT_A_FINGERPRINT])
        if present.size == 0:
            continue
        if present.size == 1 and owner.size < _smallest_holding(prints.shapes[int(present[0])]):
            # Smaller than any tensor that holds a variable (the whole of it, or a row): a
            # constant whose value happens to be a fingerprint.  Past a billion float32
            # elements keras-hub's attention mask value -1e9 is one.
            continue
        found[slot] = (owner, flat)
        if present.size > 1 or np.any(owner == NOT_A_FINGERPRINT):
            for index in present:
                mixed[int(index)] = f"{slot.name} mixes it with other values (folded?)"
    return found, mixed


def _smallest_holding(shape: Sequence[int]) -> int:
    """Elements of the smallest tensor that can hold a variable of ``shape``: one row of it
    (a stacked variable split across tensors), else all of it."""
    size = int(np.prod(shape, dtype=np.int64))
    return size // int(shape[0]) if len(shape) >= 2 and shape[0] else size


def _restore(
    module: torch.nn.Module,
    decoded: Mapping[Slot, tuple[np.ndarray, np.ndarray]],
    values: Sequence[np.ndarray],
) -> None:
    """Write the real values through the fingerprints' element maps (each variable's value
    read when a tensor needs it)."""
    with torch.no_grad():
        for slot, (owner, flat) in decoded.items():
            tensor = slot_tensor(module, slot)
            array = tensor.detach().cpu().numpy().copy()
            for index in np.unique(owner[owner != NOT_A_FINGERPRINT]):
                mask = owner == index
                array[mask] = np.asarray(values[int(index)]).reshape(-1)[flat[mask]]
            tensor.copy_(torch.from_numpy(array))


# ------------------------------------------------------------------------------- driver


@dataclass
class Adoption:
    """What :func:`adopt_tf_variables` did: the table, and per TF variable that has no torch
    parameter of its own (or more than one), why."""

    entries: list[ParameterEntry]
    problems: dict[str, str]


def adopt_tf_variables(
    module: torch.fx.GraphModule,
    variables: Sequence[Mapping[str, Any]],
    values: Sequence[np.ndarray],
    prints: Fingerprints,
    record: provenance.Provenance,
    read: Collection[str] | None = None,
) -> Adoption:
    """Rewrite ``module`` (imported from :func:`fingerprinted`'s model) in place so every TF
    variable is a named parameter or buffer holding its real value.

    ``variables`` are the TF worker's metadata (``path``, ``trainable``, ``shape``,
    ``has_grad``, ``batchnorm``) and ``values`` their values, in the same order.  ``read``
    names the ONNX values some node of the graph reads: a variable whose initializers none
    reads (and TF gives no gradient) is unused, not lost.
    """
    fuse_linear_layers(module, prints, variables)
    decoded, mixed = _decoded(module, prints)
    _restore(module, decoded, values)

    held: dict[int, _Held] = {}
    for slot, (owner, flat) in decoded.items():
        for index in np.unique(owner[owner != NOT_A_FINGERPRINT]):
            mask = owner == index
            if np.all(mask):
                held.setdefault(int(index), []).append((slot, flat))

    entries: dict[int, list[ParameterEntry]] = {}
    problems: dict[str, str] = {}
    for index, meta in enumerate(variables):
        path = str(meta["path"])
        found = held.get(index)
        why = mixed.get(index)
        if not prints.supported(index):
            why = (
                f"not located: the model has more {prints.dtypes[index]} elements than "
                "fingerprints can number (see pipeline.core.fingerprint)"
            )
        if found is None:
            entries[index] = [_absent(module, meta, values[index], record, why, problems, read)]
            continue
        placed = _place_variable(module, meta, found, problems, decoded)
        if why and path not in problems:
            problems[path] = why
        entries[index] = placed

    _move_owner_modules(module, [e for group in entries.values() for e in group])
    _batchnorm_settings(module, variables, entries)
    drop_unused(module)
    # drop_unused removes modules no node calls or reads: the holder an unused variable got
    # in _absent is one of them when its layer is unused as a whole (SmolLM3's rotary_emb).
    for index, group in entries.items():
        for entry in group:
            if entry.unused and entry.torch_name:
                holder_path, _, attr = entry.torch_name.rpartition(".")
                holder = ensure_module(module, holder_path) if holder_path else module
                if not hasattr(holder, attr):
                    value = torch.from_numpy(np.array(values[index]))
                    set_slot_tensor(holder, attr, value, entry.trainable)
    table = [e for index in range(len(variables)) for e in entries[index]]
    table += _torch_only_slots(module, table)
    _unfingerprinted_copies(module, variables, values, table, problems)
    return Adoption(table, problems)


def _absent(
    module: torch.fx.GraphModule,
    meta: Mapping[str, Any],
    value: np.ndarray,
    record: provenance.Provenance,
    mixed: str | None,
    problems: dict[str, str],
    read: Collection[str] | None = None,
) -> ParameterEntry:
    """The row of a variable no torch tensor holds: an unused variable gets a tensor of its
    own (so the module's state is complete); anything else is a problem."""
    path = str(meta["path"])
    trainable = bool(meta["trainable"])
    shape = list(meta["shape"])
    if np.asarray(value).dtype.kind != "f" and not trainable:
        # An integer state variable (a counter): nothing to train, a constant of the graph.
        return ParameterEntry(path, None, shape, False, CONSTANT, "not floating point: a constant")
    if path in record.folded:
        return ParameterEntry(
            path, None, shape, trainable, UNMAPPED, f"folded into {record.folded[path]}"
        )
    # Unused: TF gives it no gradient, and no node of the graph reads what holds it (so no
    # converter can have computed with it).
    holders = record.holders().get(path, [])
    unread = not holders or (read is not None and not any(h in read for h in holders))
    unused = unread and path not in record.lost and not meta.get("has_grad")
    if unused and not mixed:
        owner_path, attr = tf_module_path(path)
        torch_path = free_path(module, f"{owner_path}.{attr}")
        owner, _, attr = torch_path.rpartition(".")
        set_slot_tensor(
            ensure_module(module, owner), attr, torch.from_numpy(np.array(value)), trainable
        )
        return ParameterEntry(
            path, torch_path, shape, trainable, "identity", "not used by the model's outputs", True
        )
    why = (
        mixed
        or record.lost.get(path)
        or (
            "no provenance: the exported graph never recorded it"
            if path not in record.holders()
            else ""
        )
        or "no torch tensor holds it (a converter computed with it?)"
    )
    problems[path] = why
    return ParameterEntry(path, None, shape, trainable, UNMAPPED, why)


def _place_variable(
    module: torch.fx.GraphModule,
    meta: Mapping[str, Any],
    found: _Held,
    problems: dict[str, str],
    decoded: Mapping[Slot, tuple[np.ndarray, np.ndarray]],
) -> list[ParameterEntry]:
    """Place one variable held by ``found``'s slots: one slot, several copies of one layer
    (a Keras layer called twice: the copies become one module called twice), or rows split
    across slots (a stacked GRU bias)."""
    path = str(meta["path"])
    trainable = bool(meta["trainable"])
    tf_shape = tuple(int(d) for d in meta["shape"])
    size = int(np.prod(tf_shape))
    labelled = [(slot, flat, describe_index_map(flat, tf_shape)) for slot, flat in found]
    for slot, _flat, label in labelled:
        if label is None:
            problems[path] = f"{slot.name} holds it in a layout tf2torch cannot describe"
            return [ParameterEntry(path, slot.name, [], trainable, UNMAPPED, problems[path])]
    complete = [(s, f, lab) for s, f, lab in labelled if f.size == size]
    if complete:
        first_slot, first_flat, label = complete[0]
        others = [(s, f) for s, f, _ in complete[1:]]
        differing = [s.name for s, f in others if not np.array_equal(f, first_flat)]
        if differing or len(complete) != len(labelled):
            names = ", ".join(s.name for s, _, _ in labelled)
            problems[path] = f"held by {names} in different layouts: they would train apart"
        copies = [s for s, f in others if np.array_equal(f, first_flat)]
        if not all(_merge_copy(module, first_slot, copy, decoded) for copy in copies):
            names = ", ".join(s.name for s, _, _ in labelled)
            problems[path] = f"held by {names}, which are not one module: they would train apart"
        return [_place(module, first_slot, str(label), path, trainable)]
    covered = np.concatenate([f.reshape(-1) for _, f, _ in labelled])
    if covered.size != size or np.unique(covered).size != size:
        problems[path] = "its elements are split across torch tensors unevenly"
    return [_place(module, slot, str(label), path, trainable) for slot, _f, label in labelled]


def _place(
    module: torch.fx.GraphModule, slot: Slot, label: str, tf_name: str, trainable: bool
) -> ParameterEntry:
    tensor = slot_tensor(module, slot)
    readers = get_attr_users(module, slot)
    if readers or slot.owner_path == "initializers":
        # A free-standing initializer: move it to the TF variable's path.
        owner_path, attr = tf_module_path(tf_name)
        path = free_path(module, f"{owner_path}.{attr}")
        owner_path, _, attr = path.rpartition(".")
        set_slot_tensor(ensure_module(module, owner_path), attr, tensor, trainable)
        for node in readers:
            node.target = path
        delattr(get_module(module, slot.owner_path), slot.attr)
        torch_name = path
    else:
        # A tensor owned by a converted module (nn.Conv2d, nn.LSTM, a patch's module).
        owner = get_module(module, slot.owner_path)
        if (slot.attr in owner._parameters) != trainable:
            set_slot_tensor(owner, slot.attr, tensor, trainable)
        torch_name = slot.name
    return ParameterEntry(tf_name, torch_name, list(tensor.shape), trainable, label)


def _merge_copy(
    module: torch.fx.GraphModule,
    kept: Slot,
    copy: Slot,
    decoded: Mapping[Slot, tuple[np.ndarray, np.ndarray]],
) -> bool:
    """Make ``copy`` (another torch tensor holding the same variable as ``kept``) go away:
    an initializer read by ``get_attr`` is read from ``kept`` instead; a converted module
    (the second ``nn.Linear`` of a Keras layer called twice) is replaced by ``kept``'s
    module, called twice, when the two are the same module holding the same variables.
    torch.export does not keep two modules' parameters tied, so this is the only way both
    uses train one parameter.  Returns False when the copy cannot be merged: it would stay a
    tensor of its own, trained apart (or frozen as a constant), so the caller reports it.

    A module is the one the graph calls that owns the tensor (:func:`_called_owner`), at any
    depth: fused ``nn.Linear``s live at their Keras layer's path (``block.up``, and the
    second call's ``block.up_1``), so two copies can share every path part but the last."""
    readers = get_attr_users(module, copy)
    if readers or copy.owner_path == "initializers":
        for node in readers:
            node.target = kept.name
        if copy.owner_path == "initializers" or not get_attr_users(module, copy):
            owner = get_module(module, copy.owner_path)
            if copy.attr in owner._parameters or copy.attr in owner._buffers:
                delattr(owner, copy.attr)
        return True
    copy_head = _called_owner(module, copy)
    if copy_head is None:
        # Nothing calls it any more: merged already (its other tensor came first), or dead.
        return True
    kept_head = _called_owner(module, kept)
    if kept_head is None or kept_head == copy_head:
        # One module holding the variable twice cannot be one module called twice.
        return False
    first, second = module.get_submodule(kept_head), module.get_submodule(copy_head)
    if type(first) is not type(second) or repr(first) != repr(second):
        return False
    first_tensors = dict(first.named_parameters()) | dict(first.named_buffers())
    second_tensors = dict(second.named_parameters()) | dict(second.named_buffers())
    if set(first_tensors) != set(second_tensors):
        return False
    for name, tensor in second_tensors.items():
        a = decoded.get(Slot(*f"{kept_head}.{name}".rpartition(".")[::2]))
        b = decoded.get(Slot(*f"{copy_head}.{name}".rpartition(".")[::2]))
        if a is None and b is None:
            if not torch.equal(first_tensors[name], tensor):
                return False
        elif (
            a is None
            or b is None
            or not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        ):
            return False
    for node in module.graph.nodes:
        if node.op == "call_module" and node.target == copy_head:
            node.target = kept_head
    parent, _, attr = copy_head.rpartition(".")
    delattr(get_module(module, parent), attr)
    return True


def _unfingerprinted_copies(
    module: torch.nn.Module,
    variables: Sequence[Mapping[str, Any]],
    values: Sequence[np.ndarray],
    table: Sequence[ParameterEntry],
    problems: dict[str, str],
) -> None:
    """Report every trainable variable whose values some torch tensor outside the table holds
    (in any layout) without its fingerprints: a copy no provenance recorded (a fixup pass's
    transposed or reshaped initializer, say), left a constant in torch, so its use would not
    train, and torch's gradient would miss it.  Found by value, but only to report, never to
    place.  A variable with fewer than two distinct values (a fresh bias, a LayerNorm's ones)
    is skipped: a constant of zeros or ones is no evidence of a copy."""
    placed = {e.torch_name for e in table if e.torch_name}
    loose = [
        (slot, tensor)
        for slot, tensor in all_slots(module).items()
        if slot.name not in placed and tensor.numel() > 1
    ]
    sizes = {tensor.numel() for _, tensor in loose}
    by_values: dict[tuple[int, bytes], list[str]] = {}
    for meta, value in zip(variables, values, strict=True):
        path = str(meta["path"])
        array = np.asarray(value)
        if (
            not meta["trainable"]
            or path in problems
            or array.dtype.kind != "f"
            or array.size not in sizes
            or np.unique(array).size < 2
        ):
            continue
        key = (array.size, np.sort(array.astype(np.float32).reshape(-1)).tobytes())
        by_values.setdefault(key, []).append(path)
    if not by_values:
        return
    for slot, tensor in loose:
        flat = tensor.detach().cpu().to(torch.float32).numpy().reshape(-1)
        for path in by_values.get((flat.size, np.sort(flat).tobytes()), []):
            problems.setdefault(
                path,
                f"{slot.name} holds a copy of its values without its fingerprints (no "
                "provenance recorded it): a constant in torch, that use would not train",
            )


def _called_owner(module: torch.fx.GraphModule, slot: Slot) -> str | None:
    """The module the graph calls that holds ``slot``: the longest ``call_module`` target
    that is the slot's owner or one of its ancestors (``lstm_0`` for ``lstm_0.lstm.weight_ih_l0``,
    ``block.up`` for ``block.up.weight``); None when no called module holds it."""
    found: str | None = None
    for node in module.graph.nodes:
        if node.op != "call_module":
            continue
        target = str(node.target)
        holds = slot.owner_path == target or slot.owner_path.startswith(f"{target}.")
        if holds and (found is None or len(target) > len(found)):
            found = target
    return found


def _common_layer_path(tf_names: Sequence[str]) -> str:
    layer_paths = [name.split("/")[:-1] for name in tf_names]
    common: list[str] = []
    for parts in zip(*layer_paths, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return ".".join(sanitize_name(p) for p in common)


def _move_owner_modules(module: torch.fx.GraphModule, entries: Sequence[ParameterEntry]) -> None:
    """Move a converted module (``nn.Conv2d``, an ``nn.LSTM`` wrapper, a patch's module) whose
    tensors all come from one TF layer to that layer's path (the common path of its
    variables), so ``conv/kernel`` reads ``conv.weight`` and ``bilstm/forward_lstm/...``
    lives under ``bilstm``."""
    call_targets = {str(n.target) for n in module.graph.nodes if n.op == "call_module"}
    owned: dict[str, list[ParameterEntry]] = {}
    for entry in entries:
        if entry.tf_name and entry.torch_name and entry.transform != UNMAPPED:
            head = entry.torch_name.split(".")[0]
            if head in call_targets and head != "initializers":
                owned.setdefault(head, []).append(entry)
    wanted = {
        head: _common_layer_path([str(e.tf_name) for e in group]) for head, group in owned.items()
    }
    shared = {path for path in wanted.values() if list(wanted.values()).count(path) > 1}
    for head, group in owned.items():
        path = wanted[head]
        if path in shared:
            # One layer, several torch modules (SeparableConv: depthwise and pointwise).
            role = sanitize_name(str(group[0].tf_name).rpartition("/")[2].removesuffix("kernel"))
            path = f"{path}.{role.strip('_') or 'part'}"
        if not path or path == head:
            continue
        target = free_path(module, path)
        child = module.get_submodule(head)
        parent_path, _, attr = target.rpartition(".")
        (ensure_module(module, parent_path) if parent_path else module).add_module(attr, child)
        for node in module.graph.nodes:
            if node.op == "call_module" and node.target == head:
                node.target = target
        delattr(module, head)
        for entry in entries:
            if entry.torch_name and entry.torch_name.split(".")[0] == head:
                entry.torch_name = target + entry.torch_name[len(head) :]


def _batchnorm_settings(
    module: torch.nn.Module,
    variables: Sequence[Mapping[str, Any]],
    entries: Mapping[int, Sequence[ParameterEntry]],
) -> None:
    """An ``nn.BatchNorm*d`` holding a Keras BatchNormalization's statistics gets Keras's
    epsilon and momentum (Keras's ``m`` is torch's ``1 - m``); its rows say so."""
    owners: dict[str, dict[str, float]] = {}
    for index, meta in enumerate(variables):
        config = meta.get("batchnorm")
        for entry in entries.get(index, []):
            if config and entry.torch_name and entry.transform != UNMAPPED:
                owners.setdefault(entry.torch_name.rpartition(".")[0], dict(config))
    notes: dict[str, str] = {}
    for path, config in owners.items():
        try:
            norm = module.get_submodule(path)
        except AttributeError:
            continue
        if not isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            continue
        norm.eps = float(config.get("epsilon", norm.eps))
        if "momentum" in config:
            norm.momentum = round(1.0 - float(config["momentum"]), 12)
        notes[path] = f"{type(norm).__name__}(eps={norm.eps:g}, momentum={norm.momentum:g})"
    for group in entries.values():
        for entry in group:
            owner = (entry.torch_name or "").rpartition(".")[0]
            if owner in notes and not entry.note:
                entry.note = notes[owner]


def _torch_only_slots(
    module: torch.nn.Module, entries: Sequence[ParameterEntry]
) -> list[ParameterEntry]:
    """Parameters no TF variable maps to.  A documented torch-only slot that is zero
    (``nn.LSTM``'s ``bias_hh``, which Keras lacks) is frozen and listed; any other holds a
    constant of the TF graph (e.g. the ones of a BatchNorm without ``scale``) and becomes a
    buffer, so it cannot train where Keras has nothing to train."""
    placed = {entry.torch_name for entry in entries if entry.torch_name}
    extra = []
    for name, parameter in list(module.named_parameters(remove_duplicate=False)):
        if name in placed:
            continue
        if TORCH_ONLY_SLOTS.search(name) and not bool(parameter.detach().any()):
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
            continue
        owner_path, _, attr = name.rpartition(".")
        set_slot_tensor(get_module(module, owner_path), attr, parameter, trainable=False)
    return extra


def count_trainable(
    module: torch.nn.Module,
    variables: Sequence[Mapping[str, Any]],
    entries: Sequence[ParameterEntry],
    problems: Mapping[str, str] | None = None,
    *,
    inference_only: bool = False,
) -> dict[str, Any]:
    """The trainable-parameter check.

    Every trainable TF variable must have exactly one trainable torch parameter holding it
    (split rows of one stacked variable count as one), and every trainable torch parameter
    must hold a TF variable (documented torch-only slots are frozen, not counted).  ``status``
    is ``full`` when that holds and the trainable element counts agree, ``inference-only``
    when the only variables without a parameter were folded on request
    (``--fold-for-inference``), else ``fail``; ``problems`` names every variable or
    parameter at fault with the reason.  ``pass`` is ``status != "fail"``.
    """
    problems = dict(problems or {})
    frozen = {e.torch_name for e in entries if e.torch_name and not e.trainable}
    table_names = {e.torch_name for e in entries if e.torch_name}
    # What trains is what requires grad: a frozen parameter that holds no variable is a
    # constant a torch class keeps as a parameter (BatchNorm's ones without Keras's ``scale``).
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    torch_count = sum(p.numel() for n, p in params.items() if n not in frozen)
    tf_count = sum(int(np.prod(v["shape"])) for v in variables if v["trainable"])
    folded = [e.tf_name for e in entries if e.torch_name is None and e.note.startswith("folded")]
    for entry in entries:
        missing = entry.tf_name and entry.transform == UNMAPPED and entry.tf_name not in problems
        if missing and (entry.tf_name not in folded or not inference_only):
            problems[str(entry.tf_name)] = entry.note or "no torch tensor holds it"
    for name in params:
        if name not in table_names:
            problems[name] = "a trainable torch parameter that holds no Keras variable"
    unmapped = [e.tf_name for e in entries if e.tf_name and e.torch_name is None]
    if problems:
        status = "fail"
    elif folded and inference_only:
        status = "inference-only"
    else:
        status = "full" if tf_count == torch_count else "fail"
        if status == "fail":
            problems["*"] = f"TF has {tf_count} trainable elements, torch {torch_count}"
    return {
        "tf_trainable": tf_count,
        "torch_trainable": int(torch_count),
        "unmapped": len(unmapped),
        "folded": len(folded),
        "status": status,
        "pass": status != "fail",
        "problems": [{"name": k, "reason": v} for k, v in sorted(problems.items())],
    }
