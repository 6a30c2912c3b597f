"""Frontends: a torch model (torch.export + torch-mlir) or MLIR text (StableHLO or MHLO spelling)
-> graph IR, normalised by MLIR's own passes on the way in."""

from __future__ import annotations

import math
import os
import re
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch_mlir import ir as mlir_ir
from torch_mlir.dialects import torch as torch_dialect
from torch_mlir.extras.fx_decomp_util import get_decomposition_table
from torch_mlir.extras.fx_importer import ContextCache, FxImporter, FxImporterHooks, create_mlir_tensor_type

from foundation import packages
from foundation.errors import CompileError
from foundation.ir import Module
from foundation.source_loc import ROOT_MODULE, Loc, parse_mlir_location
from frontends.cache_outputs import WithoutCache, without_cache_outputs
from frontends.complex_arithmetic import realify_complex
from frontends.custom_ops import has_custom_ops, import_with_custom_ops
from frontends.hf_experts import exportable_experts
from frontends.importer import Blobs, import_module, read_resource_blobs, split_resources
from frontends.mlir_context import ErrorLog, parse_generic, run_opt
from frontends.negative_indices import wrap_negative_indices
from frontends.torch_semantics import clamp_slice_scatter_bounds, rewrite_inexact_lowerings

# `= mhlo.add`, `"mhlo.add"(`, or an op at the start of a line (`mhlo.return`): op positions only, so
# attribute names such as `mhlo.num_partitions` stay as they are.
_MHLO_OP = re.compile(r'(?P<pre>(?:=\s*|^\s*)"?)mhlo\.(?P<op>[a-z_][\w.]*)', re.M)
_MHLO_ATTR = re.compile(r"#mhlo([.<])")
# MHLO writes i64 list attributes as dense tensors; StableHLO as dense arrays.
_ARRAY_ATTRS = ("permutation", "broadcast_dimensions", "dimensions", "start_indices", "limit_indices", "strides",
                "slice_sizes", "edge_padding_low", "edge_padding_high", "interior_padding", "window_dimensions",
                "window_strides", "base_dilations", "window_dilations", "known_expanding_dimensions",
                "known_nonexpanding_dimensions")
_DENSE_I64 = re.compile(r"\b(?P<name>" + "|".join(_ARRAY_ATTRS)
                        + r")\s*=\s*dense<(?P<list>\[?)(?P<vals>[-\d,\s]*)\]?>\s*:\s*tensor<(?P<n>\d*)xi64>")
_UNKNOWN_OP = re.compile(r"(?:custom op|operation) '(?:stablehlo)\.([\w.]+)'")


def rename_mhlo(text: str) -> tuple[str, set[str]]:
    """MHLO spelling -> StableHLO spelling; returns the new text and the op names that were renamed."""
    renamed: set[str] = set()

    def op(m: re.Match) -> str:
        renamed.add(m["op"])
        return f"{m['pre']}stablehlo.{m['op']}"

    text = _MHLO_OP.sub(op, text)
    if renamed:
        text = _MHLO_ATTR.sub(r"#stablehlo\1", text)
        text = _DENSE_I64.sub(_dense_as_array, text)
    return text, renamed


def _dense_as_array(m: re.Match) -> str:
    """``name = dense<[1, 2]> : tensor<2xi64>`` -> ``name = array<i64: 1, 2>``; a splat (``dense<0> :
    tensor<3xi64>``) is written out, one value per element."""
    vals = [v.strip() for v in m["vals"].split(",") if v.strip()]
    if not m["list"] and len(vals) == 1 and m["n"]:
        vals = vals * int(m["n"])
    return f"{m['name']} = array<i64" + (f": {', '.join(vals)}>" if vals else ">")


_I1_HEX = re.compile(r'dense<"0x(?P<hex>[0-9A-Fa-f]+)">(?P<ty>\s*:\s*tensor<(?P<dims>(?:\d+x)*)i1>)')


def unpack_i1_hex(text: str) -> str:
    """Boolean constants written by TensorFlow's XLA as packed bits (``dense<"0x...">`` with one bit per element,
    least significant first) -> one byte per element, the form this MLIR reads."""

    def unpack(m: re.Match) -> str:
        count = math.prod(int(d) for d in m["dims"].split("x") if d)
        raw = bytes.fromhex(m["hex"])
        if len(raw) == count or len(raw) != (count + 7) // 8:
            return m[0]
        bits = [(raw[i // 8] >> (i % 8)) & 1 for i in range(count)]
        return f'dense<"0x{bytes(bits).hex().upper()}">{m["ty"]}'

    return _I1_HEX.sub(unpack, text)


def load_mlir(path_or_text: str | Path, source: str | None = None) -> Module:
    """Read a StableHLO/MHLO module from a file path or from text; pretty or generic form."""
    if isinstance(path_or_text, Path) or ("\n" not in str(path_or_text) and "{" not in str(path_or_text)):
        path = Path(path_or_text)
        try:
            if not path.exists():
                raise CompileError(f"{str(path)[:200]}: no such file")
            if path.is_dir():
                raise CompileError(f"{path}: is a directory, not an .mlir file")
            text = path.read_text()
        except UnicodeDecodeError:
            raise CompileError(f"{path}: not a text file") from None
        except (OSError, ValueError) as e:  # a name too long or with a NUL byte: text that is not MLIR
            raise CompileError(f"{str(path)[:200]!r}: neither a readable file nor MLIR text ({type(e).__name__})"
                               ) from None
        source = source or str(path)
    else:
        text = str(path_or_text)
        source = source or "<text>"
    if not text.strip():
        raise CompileError(f"{source}: empty module")
    text, resources = split_resources(text)
    text, renamed = rename_mhlo(text)
    text = unpack_i1_hex(text)
    try:
        generic = run_opt(text, source)
    except CompileError as e:
        m = _UNKNOWN_OP.search(str(e))
        if m and m[1] in renamed:
            where = str(e).split(": ", 1)[0]
            raise CompileError(f"unsupported op mhlo.{m[1]} at {where}: it has no StableHLO equivalent") from None
        raise
    mmodule = parse_generic(generic, source=source)
    return import_module(mmodule, read_resource_blobs(resources), source)


def _drop_non_persistent_buffers(model: torch.nn.Module) -> None:
    # torch-mlir's importer cannot map non-persistent buffers (BERT's position_ids, Llama's inv_freq);
    # treating them as persistent keeps their values as constants of the exported graph.
    for sub in model.modules():
        sub._non_persistent_buffers_set.clear()


_RESOURCE_NAME = re.compile(r"dense_resource<([\w.\-]+)>")
SMALL_RESOURCE_BYTES = 1 << 16  # resources up to this size are printed in the module's text


class WeightsAside(FxImporterHooks):
    """torch-mlir's importer hook: each weight becomes a ``dense_resource`` handle named here while its
    data stays with the tensor, which the graph IR then takes directly. The default path copies every
    weight through Python lists and the printed module carries it as hex (GPT-2 small: ~15 s)."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._by_storage: dict[tuple, str] = {}
        self._buffers: list[np.ndarray] = []

    def resolve_literal(self, gni, literal, info):
        if not isinstance(literal, torch.Tensor) or literal.numel() <= 1 or literal.dtype not in _BITS:
            return None
        t = literal.detach().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        name = self._by_storage.get(key)
        if name is None:
            name = self._by_storage[key] = f"byteir_cat_weight_{len(self.tensors)}"
            self.tensors[name] = t
        buf = t.view(_BITS[t.dtype]).numpy()
        self._buffers.append(buf)  # the attribute refers to this memory until the import is done
        attr = mlir_ir.DenseResourceElementsAttr.get_from_buffer(buf, name, create_mlir_tensor_type(t))
        return mlir_ir.Operation.create("torch.vtensor.literal", results=[gni._cc.tensor_to_vtensor_type(t)],
                                        attributes={"value": attr}).result


_BITS = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
         torch.float64: torch.int64, torch.int64: torch.int64, torch.int32: torch.int32, torch.int8: torch.int8,
         torch.uint8: torch.uint8, torch.int16: torch.int16}


# A wrapper the compiler puts around the user's model (``compile_causal_lm``'s step) names the attribute that
# holds it here, so that reports give module paths of the user's model, not of the wrapper.
SOURCE_ROOT = "source_root"
_DYNAMO_ROOT = re.compile(r"^L\['[^']+'\]\.?")  # dynamo's graphs name the model L['self'] (torch.compile)
_FRAME = re.compile(r'''File "([^"]+)", line (\d+),''')
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_TORCH_MLIR_DIR = os.path.dirname(mlir_ir.__file__) + os.sep


def model_frame(stack_trace: str) -> tuple[str, int] | None:
    """The innermost frame of a node's stack trace that is the model's code rather than torch's own (an
    ``nn.Linear`` is reported at the line of the model that called it, not inside ``torch/nn``)."""
    frames = [(f, int(n)) for f, n in _FRAME.findall(stack_trace)]
    return next((fr for fr in reversed(frames) if not fr[0].startswith(_TORCH_DIR)), frames[-1] if frames else None)


def _first_diagnostic(text: str) -> str:
    """The line that says what went wrong: torch-mlir's "... failed with the following diagnostics:" is followed
    by the diagnostic itself (``python exception: std::bad_alloc``), which is the one to show."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    if lines[0].endswith("diagnostics:") and len(lines) > 1:
        return f"{lines[0].removesuffix(' with the following diagnostics:')}: {lines[1]}"
    return lines[0]


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OURS = tuple(os.path.join(_ROOT, p) + os.sep for p in packages.ALL)


def failing_model_line(error: BaseException) -> str:
    """``file.py:LINE (function)`` of the innermost frame of the model's own code in ``error``'s traceback (not
    torch's, not the standard library's, not byteir-cat's): where tracing the model failed."""
    stdlib = os.path.dirname(os.__file__) + os.sep
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith((_TORCH_DIR, _TORCH_MLIR_DIR, stdlib, "<", *_OURS))]
    if not frames:
        return ""
    frame = frames[-1]
    return f"{os.path.basename(frame.filename)}:{frame.lineno} ({frame.name})"


class ModuleLocations(ContextCache):
    """torch-mlir's per-context cache, giving each FX node the location reports need: a NameLoc of its
    innermost module path (torch.export's ``nn_module_stack``: ``h.4.mlp.act``; the model itself when the
    stack is empty) around the file:line of the model code that made it. torch-mlir's own location is the
    raw call stack, which names no module. Paths are relative to the submodule ``root`` (see ``SOURCE_ROOT``)."""

    __slots__ = ("root",)

    def get_node_location(self, node: torch.fx.Node) -> mlir_ir.Location | None:
        frame = model_frame(node.meta.get("stack_trace") or "")
        stack = node.meta.get("nn_module_stack")
        if frame is None and stack is None:
            return None  # placeholders, outputs: the importer keeps the location it had
        file = mlir_ir.Location.file(frame[0], frame[1], 0, context=self._c) if frame \
            else mlir_ir.Location.unknown(context=self._c)
        path = _DYNAMO_ROOT.sub("", list(stack.values())[-1][0]) if stack else ROOT_MODULE
        if self.root:
            inside = path == self.root or path.startswith(self.root + ".")
            path = path[len(self.root):].removeprefix(".") if inside else ROOT_MODULE
        return mlir_ir.Location.name(path, childLoc=file, context=self._c)


_ILLEGAL = re.compile(r"^(?P<loc>loc\(.*\)): error: failed to legalize operation '(?P<op>[\w.]+)'(?P<rest>.*)$", re.M)
_OPERATOR_NAME = re.compile(r'name = "(?P<name>[\w.]+)"')


def unlowered_op(errors: list[str]) -> tuple[str, Loc] | None:
    """The first op torch-mlir could not lower (a ``torch.operator``'s own name, ``onnx.Hardmax``) and where it
    is (for a torch model, a location of ``ModuleLocations``'; for ONNX, the node's name); None for any other
    failure."""
    m = _ILLEGAL.search("\n".join(errors))
    if m is None:
        return None
    op = m["op"]
    if op == "torch.operator" and (named := _OPERATOR_NAME.search(m["rest"])):
        op = named["name"]
    return op, parse_mlir_location(m["loc"])


# What torch-mlir reports as illegal when the op that takes it has no lowering: the constant operand is left over
_OPERANDS = ("torch.constant.", "torch.vtensor.literal", "torch.prim.ListConstruct")


def _user_at(program: torch.export.ExportedProgram, operand: str, where: Loc | None, importer: FxImporter
             ) -> str | None:
    """The ATen op at ``where`` that takes an operand of the kind torch-mlir reported (a constant int / float /
    bool, a constant tensor, a list): the op with no lowering; the last such op of that source line."""
    if where is None:
        return None
    scalar = operand.startswith("torch.constant.")
    best = None
    for node in program.graph_module.graph.nodes:
        if node.op != "call_function" or not hasattr(node.target, "name"):
            continue
        loc = importer._cc.get_node_location(node)
        if loc is None or parse_mlir_location(str(loc)) != where:
            continue
        args = list(node.args) + list(node.kwargs.values())
        takes = any(isinstance(a, bool | int | float) for a in args) if scalar else \
            any(isinstance(a, list | tuple | torch.fx.Node) for a in args)
        if takes:
            best = node.target.name().split("::")[-1].split(".")[0]
    return f"torch.aten.{best}" if best else None


class LocatingFxImporter(FxImporter):
    """torch-mlir's FX importer with ``ModuleLocations``; the errors MLIR reports while lowering are kept in
    ``log`` instead of going to stderr, for the one-line refusal."""

    __slots__ = ("log",)

    def __init__(self, hooks: FxImporterHooks, root: str = ""):
        context = mlir_ir.Context()
        torch_dialect.register_dialect(context)
        super().__init__(context=context, hooks=hooks)
        self._cc = ModuleLocations(self._c, py_attr_tracker=self._py_attr_tracker)
        self._cc.root = root
        self.log = ErrorLog(context)


def _views_as_reshapes(program: torch.export.ExportedProgram) -> None:
    """``aten.view`` -> ``aten.reshape`` in the exported graph. Re-tracing under the decompositions that
    torch-mlir applies gives some tensors other strides than eager did (SDPA's math decomposition hands
    back a transposed [B, S, H*D] for batch > 1), and a ``view`` of those fails ("Cannot view a tensor
    with shape ..."). The graph is functional, so a reshape computes the same values."""
    graph = program.graph_module.graph
    for node in graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.view.default:
            node.target = torch.ops.aten.reshape.default
    program.graph_module.recompile()


def _state_in_lists_as_nodes(program: torch.export.ExportedProgram) -> None:
    """A parameter or buffer that an op takes inside a list (WavLM's ``torch.cat([..., self.gru_rel_pos_const])``)
    goes through an ``aten.alias`` first. torch-mlir's frozen import replaces state placeholders by the tensors
    themselves and then cannot import a list holding one ("Heterogeneous lists are not supported")."""
    state = {spec.arg.name for spec in program.graph_signature.input_specs
             if spec.kind != torch.export.graph_signature.InputKind.USER_INPUT}
    graph = program.graph_module.graph
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        args = list(node.args)
        for i, arg in enumerate(args):
            if not isinstance(arg, list | tuple) or not any(isinstance(a, torch.fx.Node) and a.name in state
                                                           for a in arg):
                continue
            items = list(arg)
            for j, a in enumerate(items):
                if isinstance(a, torch.fx.Node) and a.name in state:
                    with graph.inserting_before(node):
                        alias = graph.call_function(torch.ops.aten.alias.default, (a,))
                    alias.meta = dict(a.meta)
                    items[j] = alias
            args[i] = type(arg)(items)
            changed = True
        node.args = tuple(args)
    if changed:
        graph.lint()
        program.graph_module.recompile()


def from_torch(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor) -> Module:
    """torch.nn.Module -> StableHLO via torch.export and torch-mlir -> graph IR."""
    from torch_mlir import fx

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    model = model.eval()
    _drop_non_persistent_buffers(model)
    name = type(model).__name__
    model = without_cache_outputs(model)
    weights = WeightsAside()
    importer = LocatingFxImporter(weights, getattr(model, SOURCE_ROOT, ""))
    program = None
    try:
        with torch.no_grad(), exportable_experts(model):
            program = torch.export.export(model, tuple(example_inputs), strict=False)
            _views_as_reshapes(program)
            realify_complex(program)
            # before the decompositions: they turn index_copy (negative indices refused) into index_put
            wrap_negative_indices(program)
            rewrite_inexact_lowerings(program)
            _state_in_lists_as_nodes(program)
            # decomposed here rather than inside export_and_import: some lowerings need the decomposed ops fixed
            program = program.run_decompositions(get_decomposition_table())
            clamp_slice_scatter_bounds(program)
            if has_custom_ops(program):  # a tensor-parallel rank's collectives, a quantised model's GEMMs
                mmodule = import_with_custom_ops(program, importer)
            else:
                mmodule = fx.export_and_import(program, output_type="stablehlo", fx_importer=importer,
                                               decomposition_table={})
    except Exception as e:  # torch.export raises many kinds; the user needs the first line
        refused = unlowered_op(importer.log.errors)
        if refused:
            op, where = refused
            if op.startswith(_OPERANDS) and program is not None:
                op = _user_at(program, op, where, importer) or op
            raise CompileError(f"cannot compile {op} at {where or 'an unknown place'}: torch-mlir has no StableHLO "
                               f"lowering for it (torch export of {name})") from None
        first = _first_diagnostic(str(e)) or type(e).__name__
        if importer.log.errors:  # MLIR's first complaint says more than torch-mlir's "failed with diagnostics:"
            first = importer.log.errors[0].splitlines()[0]
        where = failing_model_line(e)
        raise CompileError(f"torch export of {name} failed{f' at {where}' if where else ''}: "
                           f"{type(e).__name__}: {first}") from None
    source = f"{name}.stablehlo.mlir"
    # small blobs printed in the text: a constant one of torch-mlir's passes made (a folded buffer) is read from it,
    # while the weights handed to torch-mlir stay tensors (printing them in hex costs seconds)
    text, resources = split_resources(mmodule.operation.get_asm(large_resource_limit=SMALL_RESOURCE_BYTES,
                                                                enable_debug_info=True))
    blobs: Blobs = dict(weights.tensors)
    made = set(_RESOURCE_NAME.findall(text)) - blobs.keys()
    if made:
        found = read_resource_blobs(resources)
        blobs.update({name: found[name] for name in made & found.keys()})
    if made - blobs.keys():
        # a large one among them: take every blob through the text instead
        text, resources = split_resources(mmodule.operation.get_asm(enable_debug_info=True))
        blobs = read_resource_blobs(resources)
    generic = run_opt(text, source)
    module = import_module(parse_generic(generic, source=source), blobs, source)
    if isinstance(model, WithoutCache):
        module.notes.extend(model.notes())
    return module
