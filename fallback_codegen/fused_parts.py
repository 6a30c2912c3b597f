"""A part of a very large group printed already fused: one ``linalg.generic`` whose body is the part's ops.

``linalg-fuse-elementwise-ops`` fuses a chain of n generics by copying bodies, 1 + 2 + ... + n ops, so even in
parts of ``PART_COST`` ops it was the largest cost of lowering a long chain (20000 ops: 1.7 s of 4.4 s), and the
generics it fuses first cost their own legalisation, canonicalisation and CSE. A part made only of the ops
below, all on one static shape and one f32/f64 type, is the same computation as one generic with identity maps
whose body applies each op's ``arith``/``math`` counterpart to the elements, in order: that is what
``stablehlo-legalize-to-linalg`` writes for each of them (one op in a body) and what the fusion would build, so it
is printed that way and the fusion finds nothing left to do. Splat constants become scalar ``arith.constant``
(what the fusion folds them into), written by their bits. Any other part -- another op, a broadcast, a
reduction, f16/bf16 (rounded after every op by ``keep-half-rounding``), integers, a non-splat constant -- is
printed as StableHLO and lowered as before.
"""

from __future__ import annotations

from foundation import stablehlo as shlo
from foundation.ir import Function, Op, TensorType, Value
from foundation.printer import Printer, tensor_to_numpy_bits

# StableHLO op -> the scalar op ``stablehlo-legalize-to-linalg`` puts in its generic's body, for float types
FLOAT_BODY_OPS: dict[str, str] = {
    shlo.Add.name: "arith.addf",
    shlo.Subtract.name: "arith.subf",
    shlo.Multiply.name: "arith.mulf",
    shlo.Divide.name: "arith.divf",
    shlo.Maximum.name: "arith.maximumf",
    shlo.Minimum.name: "arith.minimumf",
    shlo.Negate.name: "arith.negf",
    shlo.Abs.name: "math.absf",
}
FUSED_DTYPES = frozenset({"f32", "f64"})


def _splat_bits(op: Op) -> str | None:
    """A splat constant's element as a hexadecimal bit pattern (exact, NaN payloads and -0.0 included)."""
    bits = tensor_to_numpy_bits(op.attrs["value"]).reshape(-1)
    if bits.size == 0:
        return None
    raw = bits.view(f"u{bits.dtype.itemsize}")
    if bits.size > 1 and not bool((raw == raw[0]).all()):
        return None
    return "0x" + format(int(raw[0]), f"0{raw.dtype.itemsize * 2}X")


def _is_splat_constant(op: Op) -> bool:
    return op.name == shlo.Constant.name and not op.operands and _splat_bits(op) is not None


def fused_type(op: Op) -> TensorType | None:
    """The type ``op`` computes on when ``fused_part`` writes it as a body op (operands and result of that type,
    constant operands splats); None when it does not."""
    if op.name not in FLOAT_BODY_OPS or op.regions or len(op.results) != 1 or not op.operands:
        return None
    ty = op.result.type
    if ty.dtype not in FUSED_DTYPES or any(d < 0 for d in ty.shape):
        return None
    for v in op.operands:
        if v.type != ty or (v.owner is not None and not v.owner.operands and not v.owner.regions
                            and v.owner.name == shlo.Constant.name and not _is_splat_constant(v.owner)):
            return None
    return ty


def fused_part(fn: Function) -> list[str] | None:
    """``fn`` (a part of ``parts.split_in_parts``) as the lines of a function holding one ``linalg.generic``, or None
    when it has an op, a type or a constant the fused form does not cover."""
    block = fn.body
    if not block.ops or not block.returns:
        return None
    ty = block.returns[0].type
    if ty.dtype not in FUSED_DTYPES or any(d < 0 for d in ty.shape):
        return None
    scalar = ty.dtype
    names: dict[Value, str] = {}
    body: list[str] = []
    for i, a in enumerate(block.args):
        if a.type != ty:
            return None
        names[a] = f"%in{i}"  # the argument's element, inside the body
    for k, op in enumerate(block.ops):
        if op.regions or len(op.results) != 1 or op.result.type != ty:
            return None
        name = f"%v{k}"
        if op.name == shlo.Constant.name and not op.operands:
            bits = _splat_bits(op)
            if bits is None:
                return None
            body.append(f"{name} = arith.constant {bits} : {scalar}")
        elif fused_type(op) == ty and all(v in names for v in op.operands):
            body.append(f"{name} = {FLOAT_BODY_OPS[op.name]} {', '.join(names[v] for v in op.operands)} : {scalar}")
        else:
            return None
        names[op.result] = name
    if any(v.type != ty or v.owner is None or v not in names for v in block.returns):
        return None
    rank = len(ty.shape)
    dims = ", ".join(f"d{i}" for i in range(rank))
    identity = f"affine_map<({dims}) -> ({dims})>"
    n_in, n_out = len(block.args), len(block.returns)
    maps = ", ".join([identity] * (n_in + n_out))
    iterators = ", ".join(['"parallel"'] * rank)
    tys = ", ".join([str(ty)] * n_out)
    tensors = [f"%arg{i}" for i in range(n_in)]  # the function's arguments; %in<i> are their elements
    ins = f" ins({', '.join(tensors)} : {', '.join([str(ty)] * n_in)})" if n_in else ""
    outs = ", ".join(f"%e{j}" for j in range(n_out))
    elements = [f"%in{i}: {scalar}" for i in range(n_in)] + [f"%out{j}: {scalar}" for j in range(n_out)]
    lines = [f"  func.func private @{fn.name}({', '.join(f'{t}: {ty}' for t in tensors)}) -> ({tys}) {{"]
    lines += [f"    %e{j} = tensor.empty() : {ty}" for j in range(n_out)]
    lines.append(f"    %r{':' + str(n_out) if n_out > 1 else ''} = linalg.generic {{indexing_maps = [{maps}], "
                 f"iterator_types = [{iterators}]}}{ins} outs({outs} : {tys}) {{")
    lines.append(f"    ^bb0({', '.join(elements)}):")
    lines += ["      " + line for line in body]
    lines.append(f"      linalg.yield {', '.join(names[v] for v in block.returns)} : {', '.join([scalar] * n_out)}")
    lines.append(f"    }} -> ({tys})" if n_out > 1 else f"    }} -> {tys}")
    returned = ["%r"] if n_out == 1 else [f"%r#{j}" for j in range(n_out)]
    lines.append(f"    return {', '.join(returned)} : {tys}")
    lines.append("  }")
    return lines


class FusedPartsPrinter(Printer):
    """Prints the part functions that ``fused_part`` covers as one generic each, every other function as usual."""

    def function(self, fn: Function) -> list[str]:
        lines = fused_part(fn) if not fn.public else None
        return lines if lines is not None else super().function(fn)
