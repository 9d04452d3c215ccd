"""Write the imported graph out as the source of one ``nn.Module`` class.

The walk over the (simplified) FX graph gives one statement per node, in graph order (which
is the Keras layer order tf2onnx exported).  Three kinds of node make no statement:

- weights (``get_attr`` of a table tensor) are read as ``self.<path>``;
- small constants (one element, not changing the result's shape) are inlined as literals;
  other constants become buffers of the class, registered in ``__init__``;
- modules that hold weights are attributes built in ``__init__``
  (:mod:`pipeline.to_torch.codegen.modules`) and called as ``self.<path>(...)``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
from onnx2torch.node_converters.comparisons import OnnxCompare
from onnx2torch.node_converters.constant import OnnxConstant
from onnx2torch.node_converters.min_max import OnnxMinMax
from onnx2torch.node_converters.pow import OnnxPow
from onnx2torch.node_converters.transpose import OnnxTranspose
from onnx2torch.node_converters.where import OnnxWhere
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from pipeline.to_torch.codegen import attention, block_classes, blocks, idioms, literals, modules
from pipeline.to_torch.codegen.naming import (
    ScopeReader,
    TemporaryNames,
    attribute_name,
    attribute_path,
    sanitize,
    snake,
)
from pipeline.to_torch.codegen.simplify import simplify
from pipeline.to_torch.ops import registry
from pipeline.to_torch.ops.loop import OnnxLoop
from pipeline.to_torch.ops.recurrent import OnnxRecurrent, RecurrentSequence

_SMALL_CONSTANT = 16
"""Constants up to this many elements are written out in ``__init__`` (also in the weights)."""
_RECURRENT = (OnnxRecurrent, RecurrentSequence)
"""Wrappers whose ``rnn`` (``nn.LSTM``/``nn.GRU``) is the attribute of the generated class."""
_INLINE = (OnnxLoop,)
"""Modules written as statements of their own (a loop and its body method), never attributes."""
_OP_NUMBER = re.compile(r"(__\d+|_\d+)+$")
_INLINE_USERS = (OnnxBinaryMathOperation, OnnxCompare, OnnxPow, OnnxMinMax, OnnxWhere)
"""Ops whose constant operands may be Python scalars (broadcast like a 0-d tensor)."""


@dataclass
class Attribute:
    """Something ``__init__`` creates: a module, or a parameter / buffer tensor."""

    path: str
    original: str
    """Its path in the imported module (state-dict keys are renamed from it)."""
    module: nn.Module | None = None
    tensor: torch.Tensor | None = None
    parameter: bool = False
    trainable: bool = True
    constant: bool = False
    """A constant of the graph (not a TF variable): small ones are written out in full."""
    lines: list[str] | None = None
    """``__init__`` source written as it is (a list of blocks; its state is the plan's)."""


@dataclass
class EmittedSource:
    """``model.py``'s text and the state dict its class loads."""

    source: str
    class_name: str
    state: dict[str, torch.Tensor]
    renames: dict[str, str]
    """Old state-dict key (the imported module's) → the generated module's, where they differ."""
    helper_ops: list[str]
    """``helper (op class)`` for each op written through a helper function."""
    transposes: int
    """Transpose/permute calls in ``forward``."""
    untranslatable: list[str] = field(default_factory=list)


def _tensor_attribute(path: str, tensor: torch.Tensor) -> Attribute:
    """The attribute of a weight (a parameter table tensor) at its path in the imported module."""
    return Attribute(
        attribute_path(path),
        path,
        tensor=tensor,
        parameter=isinstance(tensor, nn.Parameter),
        trainable=bool(tensor.requires_grad),
    )


class CodegenError(Exception):
    """The graph holds ops with no translator or modules with no constructor (all listed)."""


def _meta(node: object) -> TensorMetadata | None:
    if isinstance(node, torch.fx.Node):
        meta = node.meta.get("tensor_meta")
        return meta if isinstance(meta, TensorMetadata) else None
    return None


class _Writer:
    def __init__(
        self,
        gm: torch.fx.GraphModule,
        table_names: Collection[str],
        input_names: Sequence[str],
        reader: ScopeReader,
        layer_classes: Mapping[str, str],
    ) -> None:
        self.gm = gm
        self.table_names = set(table_names)
        self.reader = reader
        self.layer_classes = dict(layer_classes)
        self.sanitized_layers = {sanitize(name): name for name in layer_classes}
        self.nodes = list(gm.graph.nodes)
        self.index = {node: i for i, node in enumerate(self.nodes)}
        self.last_use = {
            node: max((self.index[u] for u in node.users), default=self.index[node])
            for node in self.nodes
        }
        self.placeholders = [n for n in self.nodes if n.op == "placeholder"]
        self.input_names = [sanitize(name) for name in input_names]
        self.names = TemporaryNames()
        self.attributes: dict[str, Attribute] = {}
        self.rendered: dict[torch.fx.Node, str] = {}
        self.bases: dict[torch.fx.Node, str] = {}
        self.masks: dict[torch.fx.Node, str] | None = None
        self.helpers: set[str] = set()
        self.helper_ops: list[str] = []
        self.classes: dict[type, str] = {}
        self.missing: list[str] = []
        self.device_of = self.input_names[0] if self.input_names else "self"
        self.model_prefix = ""
        self.prefix = ""
        """The path of ``gm`` in the imported module (a loop body's), for state renames."""
        self.methods: dict[str, list[str]] = {}
        """Methods of the generated class besides ``forward`` (loop bodies): name → lines."""
        self.root_modules: dict[int, str] = {}
        self.now = 0
        self.layer_comments = True
        self.block_prefix = ""
        """Inside a block class: the block's layer-name prefix, which temporaries drop."""
        self.plan: block_classes.BlockPlan | None = None
        """Repeated blocks written as classes (``None``: flat)."""
        # Modules with weights (and recurrent wrappers) become attributes of the class.
        self.attribute_targets = {
            str(n.target)
            for n in self.nodes
            if n.op == "call_module"
            and not isinstance(gm.get_submodule(str(n.target)), _INLINE)
            and (
                any(True for _ in gm.get_submodule(str(n.target)).state_dict())
                or isinstance(gm.get_submodule(str(n.target)), _RECURRENT)
            )
        }
        # Names a constant buffer must not take: every weight's top-level attribute.
        self.taken_tops = {
            attribute_path(path).split(".")[0] for path in self.attribute_targets | self.table_names
        }

    # ------------------------------------------------------------------ attributes

    def _add(self, attribute: Attribute) -> str:
        attribute.original = self.prefix + attribute.original
        existing = self.attributes.get(attribute.path)
        if existing is not None and existing.original != attribute.original:
            raise CodegenError(f"two tensors want the attribute {attribute.path}")
        self.attributes[attribute.path] = attribute
        return f"self.{attribute.path}"

    def _free_attribute(self, base: str) -> str:
        tops = {path.split(".")[0] for path in self.attributes} | self.taken_tops
        name, n = attribute_name(base), 1
        while name in tops:
            name, n = f"{attribute_name(base)}_{n}", n + 1
        return name

    def _constant(self, node: torch.fx.Node, value: torch.Tensor) -> str:
        """A literal, or a buffer named after the op that reads it."""
        if value.numel() == 1 and self._inlinable(node, value):
            return literals.number(value.reshape(()).item())
        user = min(node.users, key=lambda u: self.index[u])
        name = self._free_attribute(f"{self._base(user)}_constant")
        return self._add(Attribute(name, str(node.target), tensor=value, constant=True))

    def _inlinable(self, node: torch.fx.Node, value: torch.Tensor) -> bool:
        # A Python scalar broadcasts like a 0-d tensor: the result keeps the other operand's
        # shape and dtype.  A (1,)-shaped constant is the same only where the other operand
        # already has the result's shape.
        for user in node.users:
            module = self.gm.get_submodule(str(user.target)) if user.op == "call_module" else None
            if not isinstance(module, _INLINE_USERS):
                return False
            if value.dim() == 0:
                continue
            out = _meta(user)
            others = [_meta(a) for a in user.args if a is not node]
            if out is None or not any(o is not None and o.shape == out.shape for o in others):
                return False
        return not value.dtype.is_complex

    def _weight(self, node: torch.fx.Node) -> str:
        target = str(node.target)
        owner, _, attr = target.rpartition(".")
        tensor = getattr(self.gm.get_submodule(owner) if owner else self.gm, attr)
        if target in self.table_names or isinstance(tensor, nn.Parameter):
            return self._add(_tensor_attribute(target, tensor))
        return self._constant(node, tensor)

    def _module_attribute(self, node: torch.fx.Node, module: nn.Module) -> str:
        target = str(node.target)
        if isinstance(module, _RECURRENT):
            path = self._kept_path(node)
            attribute = Attribute(attribute_path(path), f"{target}.rnn", module=module.rnn)
        else:
            attribute = Attribute(attribute_path(target), target, module=module)
        custom = modules.CUSTOM_CLASSES.get(type(module))
        if custom is not None:
            self.classes[type(module)] = custom.source
        return self._add(attribute)

    def _recurrent_path(self, target: str) -> str:
        # Keras puts an LSTM's weights in its cell (`lstm/lstm_cell/kernel`); the torch
        # module is the layer (`self.lstm`).
        parts = target.split(".")
        while len(parts) > 1 and self.layer_classes.get(
            self.sanitized_layers.get(parts[-1], ""), ""
        ).endswith("Cell"):
            parts.pop()
        return ".".join(parts)

    # ---------------------------------------------------------------------- naming

    def _kept_path(self, node: torch.fx.Node) -> str:
        target = str(node.target)
        module = self.gm.get_submodule(target)
        return self._recurrent_path(target) if isinstance(module, _RECURRENT) else target

    def _is_layout(self, node: torch.fx.Node) -> bool:
        # tf2onnx names the transposes it inserts or moves after a neighbouring op, so their
        # scope says little: they are named after the tensor they rearrange.
        if node.op != "call_module":
            return False
        return isinstance(self.gm.get_submodule(str(node.target)), OnnxTranspose)

    def _layers_of(self, node: torch.fx.Node) -> list[str]:
        if self._is_layout(node):
            return []
        target = str(node.target)
        if node.op == "call_module" and target in self.attribute_targets:
            parts = self._kept_path(node).split(".")
            return [self.sanitized_layers[p] for p in parts if p in self.sanitized_layers]
        if node.op == "call_module":
            return self.reader.layer_path(target)
        return []

    def _base(self, node: torch.fx.Node) -> str:
        """The name a node's value is called after: its layer path, else its input's."""
        if node in self.bases:
            return self.bases[node]
        target = str(node.target)
        if node.op == "call_module" and target in self.attribute_targets:
            parts = self._kept_path(node).split(".")
        else:
            parts = [sanitize(p) for p in self._layers_of(node)]
        module = self.gm.get_submodule(target) if node.op == "call_module" else None
        role = self._role(node)
        if role:
            base = role
        elif self.block_prefix:
            # Inside a block class the class says where we are: the innermost layer's name
            # (``mha/query`` -> ``query``); the block layer's own ops (its residual adds)
            # carry the stream, ``h`` (the input ``x`` is never rebound: a flagged statement
            # may read it late).
            inner = _inside_block(parts)
            stream = parts and isinstance(module, OnnxBinaryMathOperation)
            base = self._short(inner[-1]) if inner else ("h" if stream else "")
        else:
            base = "_".join(_nested([self._short(p) for p in parts]))
        if not base:
            computed = [a for a in node.args if isinstance(a, torch.fx.Node) and self._computed(a)]
            base = self._base(computed[0]) if computed else _op_name(target)
        self.bases[node] = snake(base)
        return self.bases[node]

    def _role(self, node: torch.fx.Node) -> str:
        """A name the node's role gives (an attention's result, its mask or bias), or ''."""
        if node.op == "call_module" and isinstance(
            self.gm.get_submodule(str(node.target)), attention.ScaledDotProductAttention
        ):
            return "attn"
        if self.masks is None:
            self.masks = self._mask_nodes()
        return self.masks.get(node, "")

    def _mask_nodes(self) -> dict[torch.fx.Node, str]:
        """The ops that compute nothing but an attention's mask (``mask``) or the bias it
        adds to the scores (``bias``): the mask and its preparation."""

        def role_as_mask(user: torch.fx.Node, node: torch.fx.Node) -> str:
            if user.op != "call_module":
                return ""
            module = self.gm.get_submodule(str(user.target))
            if (
                isinstance(module, attention.ScaledDotProductAttention)
                and user.args[3:4] == (node,)
                and node not in user.args[:3]
            ):
                meta = _meta(node)
                return "bias" if meta is not None and meta.dtype.is_floating_point else "mask"
            return ""

        found: dict[torch.fx.Node, str] = {}
        for node in reversed(self.nodes):  # readers first
            if node.op in ("placeholder", "output", "get_attr") or not node.users:
                continue
            roles = {found.get(u) or role_as_mask(u, node) for u in node.users}
            if len(roles) == 1 and "" not in roles:
                found[node] = roles.pop()
        return found

    def _computed(self, node: torch.fx.Node) -> bool:
        if node.op == "placeholder":
            return True
        if node.op != "call_module":
            return node.op == "call_function"
        return not isinstance(self.gm.get_submodule(str(node.target)), OnnxConstant)

    def _short(self, base: str) -> str:
        # Keras applications prefix every layer with the model's name
        # (`convnext_tiny_stage_0_...`); a temporary does not need to repeat it.
        if self.block_prefix:
            base = blocks.local_name(base, self.block_prefix)
        prefix = f"{self.model_prefix}_"
        rest = base[len(prefix) :]
        # Not when only a number would be left: a model `ReLU` (prefix `re_lu`) with its layer
        # `re_lu_1` would name the temporary `1`.
        if self.model_prefix and base.lower().startswith(prefix) and rest[:1].isalpha():
            return rest
        return base

    # ------------------------------------------------------------------- rendering

    def _arg(self, value: object) -> str:
        if isinstance(value, torch.fx.Node):
            return self.rendered[value]
        if isinstance(value, list | tuple):
            return f"[{', '.join(self._arg(v) for v in value)}]"
        if isinstance(value, torch.dtype):
            return literals.dtype(value)
        if isinstance(value, int | float | bool):
            return literals.number(value)
        if value is None:
            return "None"
        raise CodegenError(f"argument {value!r} has no source form")

    def write_forward(self) -> list[str]:
        """The body of ``forward``: statements with layer comments, and the return."""
        for placeholder, name in zip(self.placeholders, self.input_names, strict=True):
            self.rendered[placeholder] = name
            self.bases[placeholder] = name
            self.names.bind(name, self.last_use[placeholder])
        statements: list[tuple[str | None, str]] = []  # (outermost layer, statement)
        for node in self.nodes:
            if node.op in ("placeholder", "output"):
                continue
            if self.plan is not None and node in self.plan.skipped:
                call = self.plan.calls.get(node)
                if call is not None:
                    statements.extend((None, s) for s in self._block_call(node, call))
                continue
            if node.op == "get_attr":
                self.rendered[node] = self._weight(node)
                continue
            module = self.gm.get_submodule(str(node.target)) if node.op == "call_module" else None
            if isinstance(module, OnnxConstant):
                self.rendered[node] = self._constant(node, module.value)
                continue
            self.now = self.index[node]
            expression = self._expression(node, module)
            if expression is None:
                continue
            layers = self._layers_of(node)
            if isinstance(expression, registry.Block):
                statements.extend((layers[0] if layers else None, s) for s in expression.lines)
                expression = expression.value
            name = self.names.allocate(
                self._base(node), _op_name(str(node.target)), self.index[node], self.last_use[node]
            )
            self.rendered[node] = name
            statements.append((layers[0] if layers else None, f"{name} = {expression}"))
        output = next(n for n in self.nodes if n.op == "output")
        result = output.args[0]
        values = result if isinstance(result, tuple | list) else (result,)
        returned = ", ".join(self._arg(v) for v in values)
        if not self.layer_comments:
            return [*(s for _, s in statements), f"return {returned}"]
        return [*self._with_layer_comments(statements), f"return {returned}"]

    def _block_call(self, node: torch.fx.Node, call: block_classes.BlockCall) -> list[str]:
        """The statements that run blocks ``call.start:call.stop`` of a block list (one
        call, or a ``for`` loop over consecutive blocks that feed each other)."""
        assert self.plan is not None
        if call.attribute not in self.attributes:
            lines = self.plan.lists[call.attribute]
            self.attributes[call.attribute] = Attribute(call.attribute, "", lines=lines)
        self.now = self.index[node]
        args = [self._arg(a) for a in call.inputs]
        name = self.names.allocate("x", "", self.now, self.last_use[call.output])
        self.rendered[call.output] = name
        if not call.loop:
            return [f"{name} = self.{call.attribute}[{call.start}]({', '.join(args)})"]
        size = len(self.plan.lists[call.attribute]) - 2
        part = "" if (call.start, call.stop) == (0, size) else f"[{call.start}:{call.stop}]"
        lines = [] if args[0] == name else [f"{name} = {args[0]}"]
        rest = "".join(f", {a}" for a in args[1:])
        return [
            *lines,
            f"for block in self.{call.attribute}{part}:",
            f"    {name} = block({name}{rest})",
        ]

    def _with_layer_comments(self, statements: Sequence[tuple[str | None, str]]) -> list[str]:
        """A ``# layer: Class`` line before each run of two or more statements of one Keras
        layer (a lone statement already names its layer in its variable)."""
        lines: list[str] = []
        for i, (layer, statement) in enumerate(statements):
            starts = layer is not None and (i == 0 or statements[i - 1][0] != layer)
            continues = i + 1 < len(statements) and statements[i + 1][0] == layer
            layer_class = self.layer_classes.get(layer or "")
            if starts and continues and layer_class:
                lines.append(f"# {layer}: {layer_class}")
            lines.append(statement)
        return lines

    def _scratch(self, base: str) -> str:
        """A variable name for a statement the current node writes before its own, read only
        by the node (free again after it: ``attn = ...; attn = attn.transpose(1, 2)``)."""
        return self.names.allocate(base, "", self.now - 1, self.now)

    def _fresh(self, base: str) -> str:
        """A variable name for a block's own statements: free now, never handed out again
        (a value the current node reads keeps its name until after the node)."""
        return self.names.allocate(base, "", self.now - 1, len(self.nodes) + 1)

    def _write_method(
        self,
        body: nn.Module,
        example: Sequence[torch.Tensor],
        base: str,
        params: Sequence[str],
    ) -> str:
        """Write the graph module ``body`` (a submodule of the graph, e.g. a loop body) as a
        method of the generated class taking ``params``; returns the method's name."""
        assert isinstance(body, torch.fx.GraphModule)
        simplify(body)
        ShapeProp(body).propagate(*example)
        writer = _Writer(body, (), params, self.reader, self.layer_classes)
        for param in writer.input_names:  # never rebound: the method reads them throughout
            writer.names.reserve(param)
        writer.model_prefix = self.model_prefix
        writer.root_modules = self.root_modules
        writer.prefix = self.root_modules.get(id(body), "") + "."
        # One class: attributes, helpers, classes and methods are shared with this writer.
        writer.attributes = self.attributes
        writer.taken_tops = self.taken_tops
        writer.helpers = self.helpers
        writer.helper_ops = self.helper_ops
        writer.classes = self.classes
        writer.missing = self.missing
        writer.methods = self.methods
        lines = writer.write_forward()
        taken = (
            set(self.methods)
            | {"forward"}
            | self.taken_tops
            | {p.split(".")[0] for p in self.attributes}
        )
        name, n = base, 1
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        signature = ", ".join(f"{p}: torch.Tensor" for p in writer.input_names)
        self.methods[name] = [
            f"def {name}(self, {signature}) -> tuple[torch.Tensor, ...]:",
            f'    """One iteration of a loop: ``({", ".join(writer.input_names[:2])}, ...)`` in, '
            '``(cond, *carried, *scanned)`` out."""',
            *(f"    {line}" for line in lines),
        ]
        return name

    def _expression(
        self, node: torch.fx.Node, module: nn.Module | None
    ) -> str | registry.Block | None:
        args = [self._arg(a) for a in node.args]
        metas = [_meta(a) for a in node.args]
        attribute = ""
        if module is not None and str(node.target) in self.attribute_targets:
            attribute = self._module_attribute(node, module)
        key: object = module if module is not None else node.target
        try:
            if isinstance(module, attention.ScaledDotProductAttention):
                query = _meta(node.args[0])
                dim = query.shape[-1] if query is not None else 0
                lines, value = attention.code_form(module, args, dim, self._scratch)
                return registry.Block(lines, value)
            if module is None:
                translator = registry.TRANSLATORS.get(node.target)  # type: ignore[call-overload]
                if translator is None:
                    raise registry.UntranslatableError(str(node.target))
            elif type(module) in modules.CUSTOM_CLASSES:
                translator = registry.call_attribute
            else:
                translator = registry.translator_for(module)
        except registry.UntranslatableError as exc:
            self.missing.append(f"{exc} ({node.target})")
            return "None"
        context = registry.NodeContext(
            node=node,
            module=module,
            args=args,
            metas=metas,
            out=_meta(node),
            attribute=attribute,
            device_of=self.device_of,
            write_method=self._write_method,
            fresh=self._fresh,
        )
        try:
            expression = translator(context)
        except registry.UntranslatableError as exc:
            self.missing.append(f"{exc} ({node.target})")
            return "None"
        for helper in context.helpers:
            self.helpers.add(helper)
            self.helper_ops.append(f"{helper} ({type(key).__name__}: {node.target})")
        return expression

    def add_unread_table_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Make an attribute of every table tensor ``forward`` never reads (a Keras variable
        the outputs do not use), so the state dict holds every variable.  ``tensors`` are the
        table's tensors as imported (the simplified graph may have dropped an unread one's
        holder module)."""
        held = [a.original for a in self.attributes.values() if a.lines is None]
        held += self.plan.held if self.plan is not None else []
        for name in sorted(self.table_names):
            if any(name == h or name.startswith(h + ".") for h in held):
                continue
            tensor = tensors.get(name)
            if isinstance(tensor, torch.Tensor):
                self._add(_tensor_attribute(name, tensor))

    def write_init(self) -> list[str]:
        """The body of ``__init__``: containers, modules, parameters and buffers."""
        lines = ["super().__init__()"]
        made: set[str] = set()
        # Grouped by container (all of `mha.query` together), in order of first use.
        first_use: dict[str, int] = {}
        for i, path in enumerate(self.attributes):
            parts = path.split(".")
            for depth in range(1, len(parts) + 1):
                first_use.setdefault(".".join(parts[:depth]), i)

        def order(path: str) -> tuple[int, ...]:
            parts = path.split(".")
            return tuple(first_use[".".join(parts[:d])] for d in range(1, len(parts) + 1))

        for path in sorted(self.attributes, key=order):
            attribute = self.attributes[path]
            parts = path.split(".")
            for depth in range(1, len(parts)):
                container = ".".join(parts[:depth])
                if container in made:
                    continue
                if container in self.attributes:
                    raise CodegenError(f"{path} would live inside the module {container}")
                made.add(container)
                layer = self.sanitized_layers.get(parts[depth - 1])
                comment = (
                    f"  # {self.layer_classes[layer]}'s weights"
                    if layer and self.layer_classes.get(layer)
                    else ""
                )
                lines.append(f"self.{container} = nn.Module(){comment}")
            made.add(path)
            lines.extend(self._create(attribute))
        return lines

    def _create(self, attribute: Attribute) -> list[str]:
        path = attribute.path
        if attribute.lines is not None:
            return list(attribute.lines)
        if attribute.module is not None:
            try:
                text = modules.constructor(attribute.module)
                built = modules.build(text)
            except modules.ConstructorError as exc:
                self.missing.append(str(exc))
                return []
            lines = [f"self.{path} = {text}"]
            for name in modules.frozen_parameters(attribute.module, built):
                lines.append(f"self.{path}.{name}.requires_grad_(False)")
            return lines
        tensor = attribute.tensor
        assert tensor is not None
        dims = ", ".join(str(d) for d in tensor.shape) or "()"
        dtype = "" if tensor.dtype == torch.float32 else f", dtype={literals.dtype(tensor.dtype)}"
        empty = f"torch.zeros({dims}{dtype})"
        if attribute.constant and tensor.numel() <= _SMALL_CONSTANT:
            values = ", ".join(literals.number(v) for v in tensor.reshape(-1).tolist())
            empty = f"torch.tensor([{values}]{dtype}).reshape({dims})"
        if attribute.parameter:
            frozen = "" if attribute.trainable else ", requires_grad=False"
            return [f"self.{path} = nn.Parameter({empty}{frozen})"]
        owner, _, name = path.rpartition(".")
        target = f"self.{owner}" if owner else "self"
        return [f'{target}.register_buffer("{name}", {empty})']

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The generated module's state dict and the renames from the imported module's."""
        state: dict[str, torch.Tensor] = {}
        renames: dict[str, str] = {}
        if self.plan is not None:
            state.update(self.plan.state)
            renames.update(self.plan.renames)
        for path, attribute in self.attributes.items():
            if attribute.lines is not None:
                continue
            if attribute.module is not None:
                for key, value in attribute.module.state_dict().items():
                    state[f"{path}.{key}"] = value
                    renames[f"{attribute.original}.{key}"] = f"{path}.{key}"
            else:
                assert attribute.tensor is not None
                state[path] = attribute.tensor.detach()
                renames[attribute.original] = path
        return state, {old: new for old, new in renames.items() if old != new}


def _is_parameter(gm: torch.fx.GraphModule, target: str) -> bool:
    owner, _, attr = target.rpartition(".")
    module = gm.get_submodule(owner) if owner else gm
    return attr in module._parameters


def _nested(parts: Sequence[str]) -> list[str]:
    """Layer path parts without a parent whose name its child repeats
    (``stem/stem_conv`` → ``stem_conv``)."""
    kept = []
    for i, part in enumerate(parts):
        child = parts[i + 1] if i + 1 < len(parts) else ""
        if not child.lower().startswith(f"{part.lower()}_"):
            kept.append(part)
    return kept


def _inside_block(parts: Sequence[str]) -> list[str]:
    """A layer path as named inside a block class: from below the innermost block layer
    (``vit_encoder/transformer_block_1/mha`` → ``mha``), block prefixes dropped
    (``block_3_expand`` → ``expand``).  A block's own ops and the ones it recomputes from
    another block (tf2onnx shares a mask between layers) are named alike."""
    kept: list[str] = []
    for part in parts:
        key = blocks.block_key([part])
        if key is not None and sanitize(key) == part:
            kept = []
        elif key is not None:
            kept.append(blocks.local_name(part, sanitize(key)))
        else:
            kept.append(part)
    return kept


def _op_name(target: str) -> str:
    last = target.rsplit("/", 1)[-1]
    return snake(_OP_NUMBER.sub("", last)) or "value"


def _propagate(gm: torch.fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> None:
    """Shapes and dtypes of every node on the example inputs."""
    loops = [m for m in gm.modules() if isinstance(m, OnnxLoop)]
    for loop in loops:  # each loop keeps its body's first arguments, to write the body
        loop.recording, loop.example = True, None
    try:
        ShapeProp(gm).propagate(*example_inputs)
    finally:
        for loop in loops:
            loop.recording = False


def emit_source(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[torch.Tensor],
    *,
    class_name: str,
    model_name: str | None,
    input_names: Sequence[str],
    output_names: Sequence[str],
    table_names: Collection[str],
    table_tensors: Mapping[str, torch.Tensor] | None = None,
    layers: Sequence[Mapping[str, str]] = (),
    channels_first: bool = False,
    flat: bool = True,
) -> EmittedSource:
    """The source of ``model.py`` for the simplified graph module ``gm``.

    ``example_inputs`` run the graph once to learn shapes and dtypes.  ``layers`` are the
    Keras layers (``{"name", "class"}``) that name temporaries and comments;
    ``table_names`` are the parameter table's torch names (kept at their paths, or moved
    into a block list: ``blocks.2.expand.weight``).  Unless ``flat``, spelled-out activations
    become their call (:mod:`~pipeline.to_torch.codegen.idioms`), attention becomes
    ``F.scaled_dot_product_attention`` (:mod:`~pipeline.to_torch.codegen.attention`) and
    repeated blocks become classes (:mod:`~pipeline.to_torch.codegen.block_classes`).  Raises
    :class:`CodegenError` listing every op without a translator.
    """
    if not flat:
        idioms.rewrite(gm)
    _propagate(gm, example_inputs)
    if not flat and attention.rewrite(gm):
        _propagate(gm, example_inputs)
    layer_classes = {str(layer["name"]): str(layer["class"]) for layer in layers}
    writer = _Writer(
        gm, table_names, input_names, ScopeReader(layer_classes, model_name), layer_classes
    )
    writer.model_prefix = snake(model_name) if model_name else ""
    writer.root_modules = {id(m): name for name, m in gm.named_modules()}
    if not flat:
        writer.plan = block_classes.plan(writer)
    forward = writer.write_forward()
    writer.add_unread_table_tensors(table_tensors or {})
    init = writer.write_init()
    if writer.missing:
        raise CodegenError("no readable form for: " + "; ".join(writer.missing))
    state, renames = writer.state()
    taken = {cls.__name__ for cls in writer.classes} | set(writer.helpers)
    while class_name in taken:
        class_name += "Model"
    source = _file(
        class_name,
        model_name,
        writer.input_names,
        output_names,
        init,
        forward,
        [registry.HELPERS[h].strip() for h in sorted(writer.helpers)],
        [*writer.classes.values(), *(writer.plan.classes if writer.plan else [])],
        channels_first,
        [line for lines in writer.methods.values() for line in ["", *lines]],
    )
    transposes = sum(len(re.findall(r"\.(permute|transpose)\(", line)) for line in forward)
    return EmittedSource(source, class_name, state, renames, sorted(writer.helper_ops), transposes)


def _file(
    class_name: str,
    model_name: str | None,
    input_names: Sequence[str],
    output_names: Sequence[str],
    init: Sequence[str],
    forward: Sequence[str],
    helpers: Sequence[str],
    classes: Sequence[str],
    channels_first: bool = False,
    methods: Sequence[str] = (),
) -> str:
    body = "\n".join([*init, *forward, *methods])
    uses_functional = "F." in body or any("F." in h for h in [*helpers, *classes])
    imports = ["import torch"]
    if uses_functional:
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import nn")
    described = f"the Keras model ``{model_name}``" if model_name else "a TensorFlow model"
    returns = ", ".join(output_names)
    header = [
        f'"""{class_name}: {described}, as PyTorch code generated by tf2torch.',
        "",
        "Images go in and come out channels first (NCHW), as in torchvision."
        if channels_first
        else "Inputs and outputs keep the Keras layout (channels last).",
        "The weights are in ``weights.safetensors`` beside this file;",
        "``load_model()`` in ``__init__.py`` loads them.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        *imports,
    ]
    sections = ["\n".join(header), *helpers, *(c.strip() for c in classes)]
    signature = ", ".join(f"{name}: torch.Tensor" for name in input_names)
    result_type = "torch.Tensor" if len(output_names) == 1 else "tuple[torch.Tensor, ...]"
    class_lines = [
        f"class {class_name}(nn.Module):",
        f'    """{described[0].upper()}{described[1:]}: ``forward({", ".join(input_names)})`` '
        f'returns ``{returns}``."""',
        "",
        "    def __init__(self) -> None:",
        *(f"        {line}" for line in init),
        "",
        f"    def forward(self, {signature}) -> {result_type}:",
        *(f"        {line}" for line in forward),
        *(f"    {line}" if line else "" for line in methods),
    ]
    sections.append("\n".join(class_lines))
    return "\n\n\n".join(sections) + "\n"
