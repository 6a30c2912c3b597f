"""Reference evaluator: runs StableHLO (+ CHLO, + CAT) functions of the graph IR on torch CPU tensors.

It is the oracle for every later stage, so it favours exact StableHLO semantics over speed; the per-op
semantics and the precision policy live in ``semantics.ops`` (a module per op family). Self-checking programs (the
StableHLO test-suite style, ``custom_call @check.expect_close(actual, expected)``) run with ``run_checks``,
using the tolerances of StableHLO's own interpreter.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

import cat_dialect
from foundation import stablehlo as shlo
from foundation.errors import CompileError, InputError, UnsupportedOpError
from foundation.ir import Block, Function, Module, Op, Value, torch_dtype
from semantics.ops import OPS, callee_name, cat_op, is_float, order_key, unsupported

__all__ = ["SUPPORTED_OPS", "CheckResult", "check_supported", "eval_op", "evaluate", "run_checks"]

# StableHLO interpreter defaults for custom_call check targets (no attributes given).
DEFAULT_MAX_ULP = 3
DEFAULT_ALMOST_EQ_TOLERANCE = 1e-3

CHECK_TARGETS = frozenset({
    "check.expect_eq", "check.expect_close", "check.expect_almost_eq", "check.eq", "check.almost_eq",
    "check.expect_eq_const", "check.expect_almost_eq_const",
})


@dataclass
class CheckResult:
    """One ``check.*`` call of a self-checking program and its outcome."""

    name: str
    location: str
    passed: bool
    detail: str


class _Interpreter:
    """Walks blocks in order; one instance per ``evaluate``/``run_checks`` call."""

    def __init__(self, module: Module | None):
        self.module = module
        self.checks: list[CheckResult] = []
        self.depth = 0
        self.scopes: list[ChainMap[Value, torch.Tensor]] = [ChainMap()]

    def run_block(self, block: Block, args: Sequence[torch.Tensor], vectorised: bool = False) -> list[torch.Tensor]:
        if len(args) != len(block.args):
            raise CompileError(f"region takes {len(block.args)} arguments, got {len(args)}")
        # Region bodies (while, if, reduce, ...) may use values of the enclosing blocks: look those up too.
        env: ChainMap[Value, torch.Tensor] = self.scopes[-1].new_child(dict(zip(block.args, args, strict=True)))
        self.scopes.append(env)
        try:
            return self._run_ops(block, env, vectorised)
        finally:
            self.scopes.pop()

    def top_values(self, block: Block, args: Sequence[torch.Tensor]) -> dict[Value, torch.Tensor]:
        """Run ``block`` and keep every value it defines (its arguments and the results of its own ops)."""
        env: ChainMap[Value, torch.Tensor] = self.scopes[-1].new_child(dict(zip(block.args, args, strict=True)))
        self.scopes.append(env)
        try:
            self._run_ops(block, env, False)
        finally:
            self.scopes.pop()
        return dict(env.maps[0])

    def _run_ops(self, block: Block, env: ChainMap[Value, torch.Tensor], vectorised: bool) -> list[torch.Tensor]:
        for op in block.ops:
            results = eval_op(op, [env[v] for v in op.operands], self)
            if len(results) != len(op.results):
                raise CompileError(f"{op.name} at {op.loc}: evaluator gave {len(results)} results, "
                                   f"the op declares {len(op.results)}")
            for v, t in zip(op.results, results, strict=True):
                if not vectorised:
                    _check_type(op, v, t)
                env[v] = t
        return [env[v] for v in block.returns]

    def call(self, name: str, args: Sequence[torch.Tensor], where: str) -> list[torch.Tensor]:
        if self.module is None or name not in self.module.functions:
            raise CompileError(f"call at {where}: no function @{name} in the module")
        self.depth += 1
        if self.depth > 200:
            raise CompileError(f"call at {where}: recursion deeper than 200 calls")
        self.scopes.append(ChainMap())  # a callee sees only its own arguments
        try:
            return self.run_block(self.module.functions[name].body, args)
        finally:
            self.scopes.pop()
            self.depth -= 1

    def record_check(self, op: Op, passed: bool, detail: str) -> None:
        self.checks.append(CheckResult(op.attrs.get("call_target_name", op.name), str(op.loc), passed, detail))


def _check_type(op: Op, v: Value, t: torch.Tensor) -> None:
    want = torch_dtype(v.type.dtype)
    if t.dtype != want or tuple(t.shape) != v.type.shape:
        raise CompileError(f"{op.name} at {op.loc}: evaluator produced {t.dtype}{list(t.shape)}, "
                           f"the op declares {v.type}")


def eval_op(op: Op, args: list[torch.Tensor], env: _Interpreter | None = None) -> list[torch.Tensor]:
    """Exact StableHLO semantics of one op on torch CPU tensors (regions and calls need ``env``)."""
    if op.name.startswith("cat."):
        handler = cat_op
    else:
        handler = OPS.get(op.name)
    if handler is None:
        raise UnsupportedOpError(op.name, op.loc or "?", "the StableHLO interpreter has no semantics for it")
    if env is None:
        env = _Interpreter(None)
    out = handler(op, list(args), env)
    return [out] if isinstance(out, torch.Tensor) else list(out)


# ---------------------------------------------------------------------------------------------------------
# check.* targets (StableHLO interpreter semantics)
# ---------------------------------------------------------------------------------------------------------

def ulp_distance(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Per element ULP distance as StableHLO's interpreter defines it: bitwise equal or both NaN -> 0,
    finite values -> distance of sign-magnitude bit patterns, any other non-finite mismatch -> huge."""
    int_dt = {2: torch.int16, 4: torch.int32, 8: torch.int64}[actual.element_size()]
    nbits = actual.element_size() * 8
    mag_mask = (1 << (nbits - 1)) - 1

    def magnitude(t: torch.Tensor) -> torch.Tensor:
        bits = t.contiguous().view(int_dt).to(torch.int64)
        return bits & mag_mask

    a, e = torch.broadcast_tensors(actual, expected)
    ma, me = magnitude(a), magnitude(e)
    neg_a, neg_e = torch.signbit(a), torch.signbit(e)
    # same sign: exact int64 difference; opposite signs: the sum may pass 2**63, so add in float64
    dist = torch.where(neg_a != neg_e, ma.to(torch.float64) + me.to(torch.float64), (ma - me).abs().to(torch.float64))
    same_bits = (a.contiguous().view(int_dt) == e.contiguous().view(int_dt))
    both_nan = torch.isnan(a) & torch.isnan(e)
    finite = torch.isfinite(a) & torch.isfinite(e)
    huge = torch.full_like(dist, float("inf"))
    return torch.where(same_bits | both_nan, torch.zeros_like(dist), torch.where(finite, dist, huge))


def _max_abs(actual: torch.Tensor, expected: torch.Tensor) -> float:
    if actual.numel() == 0:
        return 0.0
    if is_float(actual):
        return float((actual.double() - expected.double()).abs().nan_to_num(nan=float("inf")).max())
    return float((order_key(actual).double() - order_key(expected).double()).abs().max())


def _exact_equal(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Element equality as the interpreter compares Elements: floats by value (NaN never equal)."""
    if is_float(actual):
        return actual == expected
    return order_key(actual) == order_key(expected)


def _first_bad(ok: torch.Tensor, actual: torch.Tensor, expected: torch.Tensor) -> str:
    if bool(ok.all()):
        return ""
    flat = (~ok).reshape(-1).nonzero()[0, 0].item()
    idx = list(torch.unravel_index(torch.tensor(flat), ok.shape)) if ok.dim() else []
    where = [int(i) for i in idx]
    a = actual.reshape(-1)[flat].item() if actual.numel() > 1 else actual.reshape(-1)[0].item()
    e = expected.reshape(-1)[flat].item() if expected.numel() > 1 else expected.reshape(-1)[0].item()
    return f"; first mismatch at {where}: {a!r} vs {e!r}"


def _check_operands(op: Op, args: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if op.short_name.endswith("_const") or op.name in ("check.eq", "check.almost_eq") and len(args) == 1:
        value = op.attrs.get("value")
        if not isinstance(value, torch.Tensor):
            raise unsupported(op, "check against a constant needs a dense 'value' attribute")
        return args[0], value
    if len(args) != 2:
        raise unsupported(op, f"check with {len(args)} operands (expected actual, expected)")
    actual, expected = args
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        raise CompileError(f"{op.name} at {op.loc}: compares {actual.dtype}{list(actual.shape)} with "
                           f"{expected.dtype}{list(expected.shape)}")
    return actual, expected


def _run_check(kind: str, op: Op, args: list[torch.Tensor], env: _Interpreter) -> list[torch.Tensor]:
    actual, expected = _check_operands(op, args)
    n = actual.numel()
    if kind == "close" and is_float(actual):
        lo = int(op.attrs.get("min_ulp_difference", 0))
        hi = int(op.attrs.get("max_ulp_difference", DEFAULT_MAX_ULP))
        ulps = ulp_distance(actual, expected)
        ok = (ulps <= hi) & (ulps >= lo)
        worst = float(ulps.max()) if n else 0.0
        detail = (f"{int((~ok).sum())}/{n} elements outside [{lo}, {hi}] ULP; max {worst:g} ULP, "
                  f"max abs error {_max_abs(actual, expected):.3g}")
    elif kind == "almost" and is_float(actual):
        tol = float(op.attrs.get("tolerance", DEFAULT_ALMOST_EQ_TOLERANCE))
        a, e = actual.double(), expected.double()
        both_nan = torch.isnan(a) & torch.isnan(e)
        equal = a == e
        finite = torch.isfinite(a) & torch.isfinite(e)
        same_sign = torch.signbit(a) == torch.signbit(e)
        ok = both_nan | equal | (finite & same_sign & ((a - e).abs() <= tol))
        detail = (f"{int((~ok).sum())}/{n} elements off by more than {tol:g}; "
                  f"max abs error {_max_abs(actual, expected):.3g}")
    else:
        # expect_eq, and expect_close on non-float types (the interpreter only defines ULPs for floats)
        ok = _exact_equal(actual, expected)
        detail = f"{int((~ok).sum())}/{n} elements differ; max abs error {_max_abs(actual, expected):.3g}"
    passed = bool(ok.all())
    env.record_check(op, passed, detail + _first_bad(ok, actual, expected))
    if op.results:
        return [torch.tensor(passed, dtype=torch.bool).expand(op.results[0].type.shape).clone()]
    return []


_CHECK_KIND = {
    "check.expect_eq": "eq", "check.expect_eq_const": "eq", "check.eq": "eq",
    "check.expect_close": "close",
    "check.expect_almost_eq": "almost", "check.expect_almost_eq_const": "almost", "check.almost_eq": "almost",
}


def _custom_call(op: Op, args: list[torch.Tensor], env: _Interpreter) -> list[torch.Tensor]:
    target = str(op.attrs.get("call_target_name", ""))
    if target not in _CHECK_KIND:
        raise UnsupportedOpError(op.name, op.loc or "?", f"custom_call target @{target} has no reference semantics")
    return _run_check(_CHECK_KIND[target], op, args, env)


def _check_op(op: Op, args: list[torch.Tensor], env: _Interpreter) -> list[torch.Tensor]:
    return _run_check(_CHECK_KIND[op.name], op, args, env)


OPS[shlo.CustomCall.name] = _custom_call  # type: ignore[assignment]
for _name in _CHECK_KIND:
    OPS[_name] = _check_op  # type: ignore[assignment]

# Op names with reference semantics; every ``cat.*`` op is supported too, through its declaration.
SUPPORTED_OPS: frozenset[str] = frozenset(OPS)


# ---------------------------------------------------------------------------------------------------------
# support check, evaluate, run_checks
# ---------------------------------------------------------------------------------------------------------

def _reachable(module: Module, root: str) -> list[Function]:
    seen: dict[str, Function] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in module.functions:
            continue
        seen[name] = module.functions[name]
        for op in seen[name].body.walk():
            if op.name in ("func.call", shlo.Composite.name):
                todo.append(callee_name(op))
    return list(seen.values())


def _check_op_supported(module: Module | None, op: Op) -> None:
    where = op.loc or "?"
    if op.name.startswith("cat."):
        try:
            cat_dialect.decode(op)
        except CompileError as e:
            raise UnsupportedOpError(op.name, where, str(e)) from None
        return
    if op.name not in SUPPORTED_OPS:
        raise UnsupportedOpError(op.name, where, "the StableHLO interpreter has no semantics for it")
    if op.name == shlo.CustomCall.name:
        target = str(op.attrs.get("call_target_name", ""))
        if target not in _CHECK_KIND:
            raise UnsupportedOpError(op.name, where, f"custom_call target @{target} has no reference semantics")
    if op.name in ("func.call", shlo.Composite.name):
        if module is None or callee_name(op) not in module.functions:
            raise UnsupportedOpError(op.name, where, f"callee @{callee_name(op)} is not in the module")
    if op.name == shlo.Compare.name and op.attrs.get("comparison_direction", "EQ") not in (
            "EQ", "NE", "LT", "LE", "GT", "GE"):
        raise UnsupportedOpError(op.name, where, f"comparison direction {op.attrs.get('comparison_direction')}")
    for v in list(op.operands) + list(op.results):
        try:
            torch_dtype(v.type.dtype)
        except ValueError:
            raise UnsupportedOpError(op.name, where, f"element type {v.type.dtype}") from None


def unsupported_reason(op: Op, module: Module | None = None) -> str | None:
    """Why the evaluator cannot run ``op`` (None when it can): the partition shows such ops, not hides them."""
    try:
        _check_op_supported(module, op)
    except UnsupportedOpError as e:
        return e.why or "no reference semantics"
    return None


def check_supported(module: Module | Function, function: str | None = None) -> None:
    """Raise ``UnsupportedOpError`` for the first op the evaluator cannot run (before running anything, so
    that a failure names the op and its location instead of surfacing deep inside an evaluation)."""
    if isinstance(module, Function):
        module = Module({module.name: module})
    functions = _reachable(module, function) if function else list(module.functions.values())
    for fn in functions:
        for op in fn.body.walk():
            _check_op_supported(module, op)


def _as_module(module_or_function: Module | Function) -> Module:
    if isinstance(module_or_function, Function):
        return Module({module_or_function.name: module_or_function})
    return module_or_function


def _entry(module: Module, function: str) -> Function:
    if function in module.functions:
        return module.functions[function]
    if function == "main":
        try:
            return module.main
        except KeyError:
            pass
    raise CompileError(f"{module.source}: no function @{function} to evaluate")


def evaluate(module_or_function: Module | Function, inputs: Sequence[torch.Tensor],
             function: str = "main") -> list[torch.Tensor]:
    """Run ``function`` on ``inputs`` (torch CPU tensors of exactly the declared shapes and dtypes)."""
    return evaluator(module_or_function, function)(inputs)


def evaluator(module_or_function: Module | Function, function: str = "main"
              ) -> Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]:
    """``evaluate`` of ``function`` with its ops checked once, here: a runtime binds a host compute once and runs
    it every step."""
    module = _as_module(module_or_function)
    fn = module_or_function if isinstance(module_or_function, Function) else _entry(module, function)
    check_supported(module, fn.name)
    wanted = [(v.type, torch_dtype(v.type.dtype)) for v in fn.body.args]

    def run(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        args = list(inputs)
        if len(args) != len(wanted):
            raise InputError(f"@{fn.name} takes {len(wanted)} inputs, got {len(args)}")
        for i, (t, (vtype, dtype)) in enumerate(zip(args, wanted, strict=True)):
            if not isinstance(t, torch.Tensor):
                raise InputError(f"@{fn.name} input {i}: expected a torch.Tensor, got {type(t).__name__}")
            if tuple(t.shape) != vtype.shape or t.dtype != dtype:
                raise InputError(f"@{fn.name} input {i}: expected {vtype}, got {t.dtype} {list(t.shape)}")
        outs = _Interpreter(module).run_block(fn.body, [t.detach().cpu() for t in args])
        # results may be views of the module's constants (or of each other): hand out independent tensors
        return [t.clone(memory_format=torch.contiguous_format) for t in outs]

    return run


def evaluate_values(module: Module, inputs: Sequence[torch.Tensor], function: str = "main"
                    ) -> dict[Value, torch.Tensor]:
    """Every value of ``function``'s body (arguments, op results; not those inside regions) on ``inputs``: the
    reference a compiled model's intermediate results are compared with (``byteir_cat.check``)."""
    fn = _entry(module, function)
    check_supported(module, fn.name)
    if len(inputs) != len(fn.body.args):
        raise InputError(f"@{fn.name} takes {len(fn.body.args)} inputs, got {len(inputs)}")
    return _Interpreter(module).top_values(fn.body, [t.detach().cpu() for t in inputs])


def run_checks(module: Module, function: str = "main") -> list[CheckResult]:
    """Evaluate a self-checking program (no inputs) and return every ``check.*`` outcome in order."""
    fn = _entry(module, function)
    check_supported(module, fn.name)
    if fn.body.args:
        raise InputError(f"@{fn.name} takes {len(fn.body.args)} inputs; a self-checking program takes none")
    interp = _Interpreter(module)
    interp.run_block(fn.body, [])
    return interp.checks
