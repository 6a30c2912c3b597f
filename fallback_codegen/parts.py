"""A very large fusion group lowered in parts, so that its lowering stays linear in its size.

MLIR's ``linalg-fuse-elementwise-ops`` fuses one producer into its consumer at a time, and every fusion builds a
new ``linalg.generic`` holding both bodies: fusing a chain of n elementwise ops copies 1 + 2 + ... + n ops, which
is quadratic (a chain of 2000 adds: 1.3 s; 20000: minutes). LLVM's -O3 is superlinear in a function's size too (one
function of 2000 ops, 667 of them tanh: 5.3 s). A group whose ops would lower to more than ``SPLIT_ABOVE`` MLIR ops
is printed instead as its own function calling private part functions in order, each of about ``PART_COST`` ops,
and the fusion runs inside each part. A part that ``fused_parts`` prints already fused (f32/f64 arithmetic on one
shape) has no fusion to pay for and holds up to ``FUSED_PART_COST`` ops: fewer functions cost less to lower and to
JIT (a 20000-op chain with a constant per op: 78 parts of 256 ops took 4.2 s, 5 of 4096 take 2.1 s). On the host
the parts stay functions down to LLVM, each optimised on its own (``keep_parts_apart``); for NVPTX they are inlined
back after the fusion (``pipeline(..., parts=True)``), the group's host side launching one kernel per part. Either
way the group stays one kernel with the same signature, each part's values crossing to the next through a buffer.

The values are the same: every op computes what it computed fused, on the same operands; an f16/bf16 value is
rounded to its type after every op either way (``keep-half-rounding``), so storing it between two parts changes
nothing. Groups of an ordinary model (tens of ops) are not split and lower exactly as before.
"""

from __future__ import annotations

from torch_mlir import ir

from fallback_codegen.fused_parts import fused_type
from fallback_codegen.math_approx import EXPANDED_OPS
from foundation import stablehlo as shlo
from foundation.ir import Block, Function, Module, Op, TensorType, Value

EXPANDED_COST = 100  # ops ``math_approx`` expands one of its ops into, about (tanh: 99, logistic: 75, log1p: 62)
PART_COST = 256  # MLIR ops per part: fusing a part costs ~PART_COST^2 / 2 op copies, per op ~PART_COST / 2
FUSED_PART_COST = 4096  # a part ``fused_parts`` prints fused: no fusion to pay, fewer and larger functions
SPLIT_ABOVE = 1024  # a group this large (in MLIR ops) is split; no group of the test models comes near it

_CONSTANTS = (shlo.Constant.name, "arith.constant")


def op_cost(op: Op) -> int:
    """About how many MLIR ops ``op`` is once lowered (its regions' ops included)."""
    own = EXPANDED_COST if op.name in EXPANDED_OPS else 1
    return own + sum(op_cost(inner) for region in op.regions for inner in region.ops)


def group_cost(fn: Function) -> int:
    return sum(op_cost(op) for op in fn.body.ops)


def _reads(op: Op) -> list[Value]:
    """The values ``op`` reads: its operands, then values its regions use without defining them."""
    out = list(op.operands)
    seen = set(out)

    def walk(block: Block, defined: set[Value]) -> None:
        defined = defined | set(block.args)
        for inner in block.ops:
            for v in inner.operands:
                if v not in defined and v not in seen:
                    seen.add(v)
                    out.append(v)
            for region in inner.regions:
                walk(region, defined)
            defined.update(inner.results)
        for v in block.returns:
            if v not in defined and v not in seen:
                seen.add(v)
                out.append(v)

    for region in op.regions:
        walk(region, set())
    return out


def _is_constant(op: Op | None) -> bool:
    return op is not None and op.name in _CONSTANTS and not op.operands and not op.regions


def split_in_parts(fn: Function, part_cost: int | None = None, split_above: int | None = None,
                   fused_cost: int | None = None) -> Module | None:
    """``fn`` as a module of its public function (same name, arguments and results) calling private part functions
    ``@<name>__part<k>`` in order, each of about ``part_cost`` ops, or ``fused_cost`` for a part all of whose ops
    ``fused_parts`` covers on one type (printed fused, it has no fusion to pay for); None when ``fn`` costs
    ``split_above`` or less. Constants are copied into every part that reads them. Linear in the size of ``fn``."""
    part_cost = PART_COST if part_cost is None else part_cost
    fused_cost = FUSED_PART_COST if fused_cost is None else fused_cost
    if group_cost(fn) <= (SPLIT_ABOVE if split_above is None else split_above):
        return None
    parts: list[list[Op]] = [[]]
    cost = 0
    fused: TensorType | None = None  # the type every op of the last part fuses on; None: not all of them do
    for op in fn.body.ops:
        if _is_constant(op):
            continue
        c = op_cost(op)
        ty = fused_type(op)
        stays_fused = fused is not None and ty == fused
        if parts[-1] and cost + c > (fused_cost if stays_fused else part_cost):
            parts.append([])
            cost = 0
        fused = ty if not parts[-1] or stays_fused else None
        parts[-1].append(op)
        cost += c
    if len(parts) < 2 and fused is None:  # one part is worth printing when it is printed fused
        return None
    part_of: dict[Value, int] = {}
    for k, ops in enumerate(parts):
        for op in ops:
            for r in op.results:
                part_of[r] = k
    reads = [[_reads(op) for op in ops] for ops in parts]
    # the values each part hands on: read by a later part or returned by the group, in the order they are made
    needed: set[Value] = set(fn.body.returns)
    for k, per_op in enumerate(reads):
        for vs in per_op:
            needed.update(v for v in vs if part_of.get(v, k) != k)
    module = Module()
    main = Block(args=list(fn.body.args))
    mapping: dict[Value, Value] = {}  # a part's result -> the call's result in the group's function
    calls_constants: list[Op] = []
    functions: list[Function] = []
    for k, ops in enumerate(parts):
        inputs: list[Value] = []
        constants: list[Op] = []
        taken: set = set()
        for vs in reads[k]:
            for v in vs:
                if v in taken or part_of.get(v) == k:
                    continue
                taken.add(v)
                if _is_constant(v.owner):
                    if v.owner not in taken:
                        taken.add(v.owner)
                        constants.append(v.owner)
                else:
                    inputs.append(v)
        outputs = [r for op in ops for r in op.results if r in needed]
        name = f"{fn.name}__part{k}"
        # the part's arguments are the group's values themselves: the printer names them afresh in every function
        functions.append(Function(name, Block(args=inputs, ops=constants + ops, returns=outputs), public=False))
        call = Op.create("func.call", [mapping.get(v, v) for v in inputs], [r.type for r in outputs],
                         {"callee": f"@{name}"}, ops[0].loc)
        call.raw_attrs["callee"] = f"@{name}"
        mapping.update(zip(outputs, call.results, strict=True))
        main.ops.append(call)
    for v in fn.body.returns:
        if v not in mapping and _is_constant(v.owner) and v.owner not in calls_constants:
            calls_constants.append(v.owner)  # a constant the group returns as it is
    main.ops[0:0] = calls_constants
    main.returns = [mapping.get(v, v) for v in fn.body.returns]
    # public: the inliner erases private functions nothing calls, and the parts once inlined
    module.add(Function(fn.name, main, True, dict(fn.attrs), list(fn.arg_names)))
    for f in functions:
        module.add(f)
    return module


def keep_parts_apart(module) -> None:
    """Mark the part functions of a parsed (MLIR) module ``noinline``, so that LLVM optimises each on its own (its
    -O3 pipeline costs more than linear time in a function's size: one function of 2000 ops with 667 tanh took
    5.3 s to optimise)."""
    for op in module.body.operations:
        if op.operation.name == "func.func" and "__part" in ir.StringAttr(op.attributes["sym_name"]).value:
            op.attributes["llvm.passthrough"] = ir.ArrayAttr.get([ir.StringAttr.get("noinline")])
