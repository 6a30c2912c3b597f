"""A fusion group whose sizes are symbolic (``dynamic_shapes``) -> MLIR text with ``?`` sizes that the usual
pipeline lowers to loops with runtime bounds.

The function takes one more argument, ``tensor<K x i64>``: the values of the K symbols for this call, in the
plan's order. Every symbolic size the group needs is computed from it in the prologue. Ops keep their StableHLO
form where StableHLO lowers dynamic shapes itself (elementwise, reduce, transpose, concatenate, gather); those
whose sizes are attributes take them as operands: ``dynamic_broadcast_in_dim``, ``dynamic_iota``, a splat
constant broadcast to its size, ``tensor.extract_slice`` for a slice; a reshape becomes ``tensor.collapse_shape``
/ ``expand_shape`` of groups of dimensions (views that fusion sees through).
"""

from __future__ import annotations

from foundation import stablehlo as shlo
from foundation.errors import CompileError
from foundation.ir import Function, Module, Op, TensorType, Value
from foundation.printer import Printer, print_module
from foundation.sym_shape import Dim, SymExpr
from semantics.op_traits import ELEMENTWISE

EXTENTS_DTYPE = "i64"


class DynamicGroupPrinter(Printer):
    """Prints one group with the sizes of ``shapes`` (value -> dims, ints or ``SymExpr``), the varying integer
    attributes of ``attrs`` (op -> {name: value with SymExpr}) and the symbolic splat constants ``splats``."""

    def __init__(self, symbols: list[str], shapes: dict[Value, tuple[Dim, ...]], attrs: dict[Op, dict],
                 splats: set[Op]):
        super().__init__()
        self.symbols = symbols
        self.shapes = shapes
        self.sym_attrs = attrs
        self.splats = splats
        self.extents = Value(TensorType((len(symbols),), EXTENTS_DTYPE))
        self.exprs: dict[SymExpr, str] = {}  # expression -> its i64 SSA name
        self.tmp = 0

    # -- types and the extents argument ---------------------------------------------------------------------------
    def dims(self, v: Value) -> tuple[Dim, ...]:
        return self.shapes.get(v, v.type.shape)

    def ty(self, v: Value) -> str:
        dims = self.dims(v)
        return "tensor<" + "".join(f"{d if isinstance(d, int) else '?'}x" for d in dims) + f"{v.type.dtype}>"

    def extra_args(self) -> list[Value]:
        return [self.extents]

    def prologue(self, indent: str) -> list[str]:
        self.exprs = {}
        lines = []
        for k, name in enumerate(self.symbols):
            lines += [f"{indent}%sym_c{k} = arith.constant {k} : index",
                      f"{indent}%sym{k} = tensor.extract {self.name(self.extents)}[%sym_c{k}] : "
                      f"tensor<{len(self.symbols)}x{EXTENTS_DTYPE}>"]
            self.exprs[SymExpr.symbol(name)] = f"%sym{k}"
        return lines

    def fresh(self) -> str:
        self.tmp += 1
        return f"%dyn{self.tmp}"

    def i64(self, d: Dim, out: list[str], indent: str) -> str:
        """SSA name of an i64 holding ``d``; products and sums of symbols are emitted once per function."""
        e = SymExpr.of(d)
        if e in self.exprs:
            return self.exprs[e]
        if e.is_const:
            name = self.fresh()
            out.append(f"{indent}{name} = arith.constant {e.value} : i64")
        else:
            terms = []
            for mono, coef in sorted(e.terms.items()):
                factors = [self.exprs[SymExpr.symbol(sym)] for sym, power in mono for _ in range(power)]
                if coef != 1 or not factors:
                    factors.append(self.i64(coef, out, indent))
                terms.append(self.fold("arith.muli", factors, out, indent))
            name = self.fold("arith.addi", terms, out, indent)
        self.exprs[e] = name
        return name

    def fold(self, op: str, names: list[str], out: list[str], indent: str) -> str:
        """``names[0] op names[1] op ...`` on i64 values."""
        acc = names[0]
        for other in names[1:]:
            nxt = self.fresh()
            out.append(f"{indent}{nxt} = {op} {acc}, {other} : i64")
            acc = nxt
        return acc

    def index(self, d: Dim, out: list[str], indent: str) -> str:
        name = self.fresh()
        out.append(f"{indent}{name} = arith.index_cast {self.i64(d, out, indent)} : i64 to index")
        return name

    def shape_tensor(self, dims: tuple[Dim, ...], out: list[str], indent: str) -> str:
        parts = [self.i64(d, out, indent) for d in dims]
        name = self.fresh()
        out.append(f"{indent}{name} = tensor.from_elements {', '.join(parts)} : tensor<{len(dims)}xi64>")
        return name

    # -- ops ---------------------------------------------------------------------------------------------------
    def op(self, op: Op, indent: str) -> list[str]:
        symbolic = any(isinstance(d, SymExpr) for r in op.results for d in self.dims(r)) or op in self.sym_attrs
        if not symbolic or op.regions:
            return super().op(op, indent)
        out: list[str] = []
        res = self.name(op.result) if len(op.results) == 1 else ""
        dims = self.dims(op.result) if len(op.results) == 1 else ()
        if isinstance(op, shlo.Constant):
            if op not in self.splats:
                raise CompileError(f"constant at {op.loc or '?'}: contents depend on the sizes")
            scalar = op.result.type.with_shape(())
            value = op.attrs["value"].reshape(-1)[:1].reshape(())
            scalar_name, shape = self.fresh(), self.shape_tensor(dims, out, indent)
            attr = self.constant_attr(value, scalar)
            out.append(f'{indent}{scalar_name} = "{shlo.Constant.name}"() {{value = {attr}}} : () -> {scalar}')
            out.append(f'{indent}{res} = "{shlo.DynamicBroadcastInDim.name}"({scalar_name}, {shape}) '
                       f"{{broadcast_dimensions = {_ints([])}}} : ({scalar}, tensor<{len(dims)}xi64>) -> "
                       f"{self.ty(op.result)}")
        elif isinstance(op, shlo.BroadcastInDim):
            x = op.operands[0]
            bdims = list(op.attrs["broadcast_dimensions"])
            in_dims = self.dims(x)
            same = [k for k, d in enumerate(bdims) if in_dims[k] == dims[d]]
            grow = [k for k, d in enumerate(bdims) if in_dims[k] == 1 and dims[d] != 1]
            shape = self.shape_tensor(dims, out, indent)
            attrs = (f"broadcast_dimensions = {_ints(bdims)}, known_nonexpanding_dimensions = {_ints(same)}, "
                     f"known_expanding_dimensions = {_ints(grow)}")
            out.append(f'{indent}{res} = "{shlo.DynamicBroadcastInDim.name}"({self.name(x)}, {shape}) {{{attrs}}}'
                       f" : ({self.ty(x)}, tensor<{len(dims)}xi64>) -> {self.ty(op.result)}")
        elif isinstance(op, shlo.Reshape):
            out += self.reshape(op.operands[0], op.result, indent)
        elif isinstance(op, shlo.Iota):
            shape = self.shape_tensor(dims, out, indent)
            out.append(f'{indent}{res} = "{shlo.DynamicIota.name}"({shape}) {{iota_dimension = '
                       f"{int(op.attrs['iota_dimension'])} : i64}} : (tensor<{len(dims)}xi64>) -> {self.ty(op.result)}")
        elif isinstance(op, shlo.Slice):
            x = op.operands[0]
            attrs = {**op.attrs, **self.sym_attrs.get(op, {})}
            strides = [int(s) for s in attrs.get("strides", [1] * len(dims))]
            offsets = [self._static_or_index(d, out, indent) for d in attrs["start_indices"]]
            sizes = [self._static_or_index(d, out, indent) for d in dims]
            out.append(f"{indent}{res} = tensor.extract_slice {self.name(x)}[{', '.join(offsets)}] "
                       f"[{', '.join(sizes)}] [{', '.join(map(str, strides))}] : {self.ty(x)} to {self.ty(op.result)}")
        elif (op.name in _SIZE_FROM_OPERANDS or op.name in ELEMENTWISE) and op not in self.sym_attrs:
            return super().op(op, indent)
        else:
            raise CompileError(f"{op.name} at {op.loc or '?'}: no lowering with symbolic sizes "
                               f"({', '.join(self.ty(r) for r in op.results)})")
        return out

    def reshape(self, x: Value, r: Value, indent: str) -> list[str]:
        """A collapse or an expansion of groups of dimensions (a view that fusion sees through) where the sizes
        say which; else through one dimension (collapse all, then expand)."""
        out: list[str] = []
        src, dst = self.dims(x), self.dims(r)
        res = self.name(r)
        if len(src) >= len(dst) and (groups := reassociation(src, dst)) is not None:
            out.append(f"{indent}{res} = tensor.collapse_shape {self.name(x)} {groups} : {self.ty(x)} into "
                       f"{self.ty(r)}")
            return out
        if len(src) < len(dst) and (groups := reassociation(dst, src)) is not None:
            sizes = ", ".join(self._static_or_index(d, out, indent) for d in dst)
            out.append(f"{indent}{res} = tensor.expand_shape {self.name(x)} {groups} output_shape [{sizes}] : "
                       f"{self.ty(x)} into {self.ty(r)}")
            return out
        numel = SymExpr.const(1)
        for d in src:
            numel = numel * d
        flat = self.fresh()
        flat_ty = f"tensor<{numel.value if numel.is_const else '?'}x{x.type.dtype}>"
        out.append(f"{indent}{flat} = tensor.collapse_shape {self.name(x)} [{list(range(len(src)))}] : {self.ty(x)} "
                   f"into {flat_ty}")
        sizes = ", ".join(self._static_or_index(d, out, indent) for d in dst)
        out.append(f"{indent}{res} = tensor.expand_shape {flat} [{list(range(len(dst)))}] output_shape [{sizes}] : "
                   f"{flat_ty} into {self.ty(r)}")
        return out

    def _static_or_index(self, d: Dim, out: list[str], indent: str) -> str:
        return str(d) if isinstance(d, int) else self.index(d, out, indent)


def reassociation(many: tuple[Dim, ...], few: tuple[Dim, ...]) -> list[list[int]] | None:
    """Consecutive groups of ``many`` whose sizes multiply to each of ``few`` (as polynomials); None when there
    are none. Sizes of 1 left over join the last group; a size of 1 in ``few`` with nothing of ``many`` left for
    it has none (a group is never empty: (T, 2, 64) -> (2 T, 64, 1) is a collapse and then an expansion)."""
    groups: list[list[int]] = []
    i = 0
    for d in few:
        group, size = [], SymExpr.const(1)
        while i < len(many) and (not group or size != d):
            group.append(i)
            size = size * many[i]
            i += 1
        if size != d or not group:
            return None
        groups.append(group)
    while i < len(many) and many[i] == 1 and groups:
        groups[-1].append(i)
        i += 1
    return groups if i == len(many) and len(groups) == len(few) else None


def _ints(values: list[int]) -> str:
    return "array<i64" + (": " + ", ".join(map(str, values)) if values else "") + ">"


# ops whose result sizes StableHLO's lowering takes from their operands' runtime sizes
_SIZE_FROM_OPERANDS = frozenset({
    shlo.Transpose.name, shlo.Concatenate.name, shlo.Gather.name, shlo.Convert.name, shlo.Select.name,
    shlo.Compare.name, shlo.Clamp.name,
})


def print_dynamic_group(fn: Function, symbols: list[str], shapes: dict[Value, tuple[Dim, ...]],
                        attrs: dict[Op, dict], splats: set[Op]) -> str:
    """MLIR text of ``fn`` with symbolic sizes and the extents argument last among its inputs."""
    return print_module(Module({fn.name: fn}), printer=DynamicGroupPrinter(symbols, shapes, attrs, splats))
