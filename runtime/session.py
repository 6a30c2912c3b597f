"""``Session``: loads an artifact once (verify, JIT, bind buffers) and runs it many times.

Needs only torch, llvmlite, safetensors and the standard library (plus the pure-Python parts of this
project: the graph IR, CAT op semantics, the StableHLO interpreter for host-evaluated subgraphs); the CUDA
device adds cuda-python, imported when a CUDA session binds.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from foundation import stablehlo as shlo
from foundation.byre_plan import ByreModule, IndexRange
from foundation.errors import ArtifactError, InputError
from foundation.ir import Block, Function, Module, Op, torch_dtype
from foundation.serialize import Reader, type_from_json
from runtime.artifact import Artifact, read
from runtime.cpu_provider import CpuProvider, Kernel, Slots
from runtime.cuda_provider import CudaProvider, require_device
from runtime.signing import TrustedKey
from semantics.interpreter import run_checks

DEVICES = ("cpu", "cuda")
StepHook = Callable[[int, Any, Slots], None]


MAX_BOUND_SIZES = 32  # dynamic shapes: plans bound at this many sizes are kept (the oldest is dropped)


@dataclass
class _Binding:
    """A plan bound to buffers: what ``run`` uses (one per size for a dynamic-shape plan)."""

    plan: ByreModule  # what runs: the plan itself, or a dynamic-shape plan specialised to one size
    slots: Slots
    kernels: list[tuple[Kernel, int]]
    in_types: list[tuple[tuple[int, ...], torch.dtype]]
    fresh: list[tuple[int, tuple[int, ...], torch.dtype]]
    out_plan: list[tuple[int, bool]]


@dataclass
class ComputeTime:
    """One ``byre.compute`` of a profiled run."""

    callee: str
    kind: str
    seconds: float
    detail: str  # the CAT op, kernel symbol, or why it runs on the StableHLO interpreter


class Session:
    """A loaded artifact bound to one device, with its arena; ``run`` is not re-entrant (one arena), so
    concurrent callers are serialised.

    ``cuda_graphs`` (CUDA): ``run`` launches every compute itself the first time, captures the whole plan as
    one CUDA graph the second time and replays it from then on, so the host cost of a run (a Python call and
    CUTLASS's argument set-up per kernel) is paid once. Plans with interpreted computes run without a graph;
    a capture that fails falls back to launches, with a warning and the reason in ``graph_error``.

    ``provider`` (tools and tests) binds the computes with another CPU-side provider class, constructed like
    ``CpuProvider``: the GPU emulator runs a CUDA artifact's plan on the CPU that way."""

    def __init__(self, artifact: str | Path | Artifact, device: str = "cpu",
                 provider: Callable[..., Any] | None = None, cuda_graphs: bool = True, plan: str | None = None,
                 trusted_keys: Sequence[TrustedKey] | None = None):
        if device not in DEVICES:
            raise ArtifactError(f"device {device!r}: this runtime has providers for {', '.join(DEVICES)} only")
        start = time.perf_counter()
        self.artifact = artifact if isinstance(artifact, Artifact) else read(artifact, target=device,
                                                                              trusted_keys=trusted_keys)
        if provider is None and self.artifact.target != device:
            raise ArtifactError(f"artifact compiled for target {self.artifact.target}, cannot run on {device}")
        if provider is not None and device != "cpu":
            raise ArtifactError("a custom provider runs on the cpu device only")
        # the plans this session chooses from by the inputs' sizes: a named one, or the main plan and its profiles
        self.plans: list[ByreModule] = [self.artifact.plan(plan)] + (
            [self.artifact.plan(p) for p in self.artifact.profiles] if plan is None else [])
        self.byre: ByreModule = self.plans[0]
        self.device = device
        self.torch_device = torch.device("cpu")
        if device == "cuda":
            self.torch_device = require_device(self.artifact.arch)
        self._lock = threading.Lock()
        self.last_profile: list[ComputeTime] = []
        self._provider_class = provider
        self.cuda_graphs = cuda_graphs
        self.graph_error = ""
        self._graph: tuple[torch.cuda.CUDAGraph, list[torch.Tensor], list[torch.Tensor]] | None = None
        self._launched_once = False
        self._bind()
        self.load_seconds = time.perf_counter() - start

    # -- binding ---------------------------------------------------------------------------------------------
    def _bind(self) -> None:
        self.arena = torch.empty(max(max(p.arena_bytes for p in self.plans), 1), dtype=torch.uint8,
                                 device=self.torch_device)
        self._cuda = None
        self._env_key: tuple[int, ...] | None = None
        self._bindings: dict[tuple[int, ...], _Binding] = {}
        self._shared: dict[Any, Any] = {}  # what bindings at several sizes share (prepacked weights)
        self._ranges: dict[str, tuple[int, int]] = {}  # each dynamic dimension's range over every plan
        for plan in self.plans:
            for b in plan.bounds:
                lo, hi = self._ranges.get(b.name, (b.lo, b.hi))
                self._ranges[b.name] = (min(lo, b.lo), max(hi, b.hi))
        if not self.sized:
            self._install(self._bind_plan(self.byre))
            return
        if self.device != "cpu":
            raise ArtifactError("a dynamic-shape artifact runs on the cpu device only")
        # bound now at the upper bound: a bad plan fails at load, not at the first run
        self._use_env((0, *(b.hi for b in self.plans[0].bounds)))

    @property
    def sized(self) -> bool:
        """Whether the plan run depends on the inputs' sizes (dynamic shapes, or profiles to choose from)."""
        return len(self.plans) > 1 or bool(self.plans[0].symbols)

    def _use_env(self, key: tuple[int, ...]) -> None:
        """Dynamic shapes: make plan ``key[0]`` specialised to the symbol values ``key[1:]`` current (bound once
        per plan and size)."""
        if key == self._env_key:
            return
        binding = self._bindings.get(key)
        plan = self.plans[key[0]]
        if binding is None:
            if len(self._bindings) >= MAX_BOUND_SIZES:
                self._bindings.pop(next(iter(self._bindings)))
            env = dict(zip([b.name for b in plan.bounds], key[1:], strict=True))
            binding = self._bindings[key] = (self._bind_plan(plan.specialize(env), leading_blocks=True)
                                             if plan.symbols else self._bind_plan(plan))
        self._install(binding)
        self._env_key = key

    def _select(self, inputs: tuple) -> tuple[int, ...]:
        """The first plan whose sizes hold the inputs' (its symbols within bounds, its static sizes equal), with
        the symbol values. When none does, the main plan's complaint, with each dimension's range over all plans."""
        ranges = self._ranges
        for k, plan in enumerate(self.plans):
            try:
                key = (k, *self._env_of(plan, inputs, ranges))
            except InputError:
                continue
            bound = {(i, d) for i, d, _ in plan.bindings}
            if all(isinstance(t, torch.Tensor) and t.dim() == len(plan.values[vid].type.shape)
                   and all((i, d) in bound or t.shape[d] == n for d, n in enumerate(plan.values[vid].type.shape))
                   for i, (t, vid) in enumerate(zip(inputs, plan.inputs, strict=False))):
                return key
        # none fits: the main plan raises what is out of range, or check_inputs what else is wrong
        return (0, *self._env_of(self.plans[0], inputs, ranges))

    def _install(self, b: _Binding) -> None:
        self.byre, self._slots, self._kernels, self._in_types, self._fresh, self._out_plan = (
            b.plan, b.slots, b.kernels, b.in_types, b.fresh, b.out_plan)

    def _bind_plan(self, byre: ByreModule, leading_blocks: bool = False) -> _Binding:
        """Slots (arena views, weights) and bound kernels of a static plan (or of a dynamic one at one size:
        ``leading_blocks``, where a weight stored at the upper bound's size is bound as its leading block at this
        one, a contiguous copy made once per size)."""
        tensors, dev = self.artifact.tensors, self.torch_device
        n = len(byre.values)
        slots: Slots = [None] * n
        static = [False] * n
        for v in byre.values:
            dtype = torch_dtype(v.type.dtype)
            if v.storage == "arena":
                nbytes = v.type.nbytes
                if v.offset < 0 or v.offset + nbytes > self.arena.numel():
                    raise ArtifactError(f"ByRE value {v.id}: offset {v.offset} (+{nbytes} B) is outside the arena")
                slots[v.id] = self.arena[v.offset:v.offset + nbytes].view(dtype).view(v.type.shape)
                static[v.id] = True
            elif v.storage == "weight":
                t = tensors.get(v.key)
                exact = t is not None and tuple(t.shape) == v.type.shape
                block = (leading_blocks and t is not None and not exact and t.dim() == len(v.type.shape)
                         and all(n <= m for n, m in zip(v.type.shape, t.shape, strict=True)))
                if not (exact or block) or t.dtype != dtype:
                    raise ArtifactError(f"weight {v.key}: missing or not {v.type} in weights.safetensors")
                w = self.artifact.weight_on(v.key, dev)
                slots[v.id] = w[tuple(slice(0, n) for n in v.type.shape)].contiguous() if block else w
                static[v.id] = True
        if self.device == "cuda":
            provider = self._cuda = CudaProvider(byre, self.artifact, slots, static, dev)
            provider.begin_run()  # CAT workspaces are sized on this device as each kernel is bound
        else:
            make = self._provider_class or CpuProvider
            provider = make(byre, self.artifact.kernels, tensors, slots, static)
            provider.shared = self._shared
        kernels: list[tuple[Kernel, int]] = []
        for step, c in enumerate(byre.computes):
            if c.kind == "alias" and all(static[o] for o in c.operands):
                provider.bind(c)(slots)  # a view of a buffer that never moves: make it once
                for r in c.results:
                    static[r] = True
                continue
            kernels.append((provider.bind(c), step))
        in_types = [(tuple(byre.values[v].type.shape), torch_dtype(byre.values[v].type.dtype)) for v in byre.inputs]
        fresh = [(v.id, tuple(v.type.shape), torch_dtype(v.type.dtype)) for v in byre.values if v.storage == "output"]
        out_plan = [(vid, byre.values[vid].storage == "output" and byre.outputs.index(vid) == k)
                    for k, vid in enumerate(byre.outputs)]
        return _Binding(byre, slots, kernels, in_types, fresh, out_plan)

    @staticmethod
    def _env_of(plan: ByreModule, inputs: tuple, ranges: dict[str, tuple[int, int]]) -> tuple[int, ...]:
        """The symbol values of a dynamic-shape plan read off the inputs; a one-line ``InputError`` for a size out
        of its bounds (naming ``ranges``, each symbol's over every plan) or two inputs that disagree on one."""
        names = plan.input_names
        env: dict[str, tuple[int, int, int]] = {}
        for i, d, sym in plan.bindings:
            t = inputs[i] if i < len(inputs) else None
            if not isinstance(t, torch.Tensor) or t.dim() <= d:
                continue  # check_inputs names what is wrong with it
            size = int(t.shape[d])
            if sym in env and env[sym][0] != size:
                _, j, e = env[sym]
                raise InputError(f"input {i} dim {d} is {size} but input {j} dim {e} is {env[sym][0]}: both are the "
                                 f"dynamic dimension '{sym}'")
            env.setdefault(sym, (size, i, d))
        key = []
        for b in plan.bounds:
            if b.name not in env:
                raise InputError(f"the dynamic dimension '{b.name}' ({b.where}) has no input to read it from")
            size, i, d = env[b.name]
            if not b.lo <= size <= b.hi:
                who = f"input {i}" + (f" ({names[i]})" if i < len(names) and names[i] else "")
                lo, hi = ranges.get(b.name, (b.lo, b.hi))
                raise InputError(f"{who} dim {d} is {size}, outside the compiled range of dynamic dimension "
                                 f"'{b.name}': [{lo}, {hi}]")
            key.append(size)
        return tuple(key)

    # -- running ---------------------------------------------------------------------------------------------
    def check_inputs(self, inputs: tuple) -> list[torch.Tensor]:
        """One-line ``InputError`` for a wrong count, type, shape or dtype; contiguous tensors on the
        session's device out."""
        if len(inputs) != len(self._in_types):
            raise InputError(f"the model takes {len(self._in_types)} input(s), got {len(inputs)}")
        if self.sized:
            self._use_env(self._select(inputs))
        out = []
        for i, (t, (shape, dtype)) in enumerate(zip(inputs, self._in_types, strict=True)):
            if not isinstance(t, torch.Tensor):
                raise InputError(f"input {i}: expected a torch.Tensor, got {type(t).__name__}")
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise InputError(f"input {i}: expected shape {list(shape)} {dtype}, got {list(t.shape)} {t.dtype}")
            if i in self._index_ranges:
                self._check_indices(i, t, self._index_ranges[i])
            t = t.detach().to(self.torch_device).contiguous()
            if self._cuda is not None and t.data_ptr() % 16:
                t = t.clone()  # a view at an odd offset: vectorised kernels need 16-B aligned operands
            out.append(t)
        return out

    @property
    def _index_ranges(self) -> dict[int, IndexRange]:
        return {r.input: r for r in self.byre.index_ranges}

    def _check_indices(self, i: int, t: torch.Tensor, r: IndexRange) -> None:
        """Refuse indices outside their table (a gather would clamp them silently), naming the first one."""
        if t.numel() == 0:
            return
        lo, hi = torch.aminmax(t.detach())
        if int(lo) >= 0 and int(hi) < r.size:
            return
        pos = tuple(int(x) for x in ((t < 0) | (t >= r.size)).nonzero()[0])
        names = self.byre.input_names
        who = f"input {i}" + (f" ({names[i]})" if i < len(names) and names[i] else "")
        raise InputError(f"{who}: value {int(t[pos])} at position {list(pos)} is outside the valid range "
                         f"[0, {r.size}) of the table it indexes ({r.table})")

    def run(self, *inputs: torch.Tensor, profile: bool = False, donate: Sequence[int] = ()
            ) -> tuple[torch.Tensor, ...]:
        """Run the model; the outputs are fresh tensors owned by the caller. ``donate``: positions of inputs the
        caller gives up; an output the plan can compute in such an input's buffer (``ByreModule.donatable``,
        a KV-cache write) is computed there and returned as that tensor, so nothing is copied."""
        with self._lock:
            ins = self.check_inputs(inputs)
            if donate:
                wrong = [i for i in donate if not 0 <= i < len(ins)]
                if wrong:
                    raise InputError(f"donate: input position {wrong[0]} is not one of the {len(ins)} inputs")
                return tuple(self._run(ins, profile, frozenset(donate))[0])
            if profile or not self._graphs_apply():
                return tuple(self._run(ins, profile)[0])
            if self._graph is None:
                if not self._launched_once:
                    self._launched_once = True
                    return tuple(self._run(ins, False)[0])
                try:
                    self._graph = self._capture(ins)
                except (RuntimeError, ArtifactError) as e:
                    self.cuda_graphs, self.graph_error = False, f"{type(e).__name__}: {e}".splitlines()[0]
                    warnings.warn(f"byteir-cat: CUDA graph capture failed, launching per compute: {self.graph_error}",
                                  RuntimeWarning, stacklevel=2)
                    return tuple(self._run(ins, False)[0])
            return self._replay(self._graph, ins)

    @property
    def graph_active(self) -> bool:
        """Whether ``run`` replays a captured CUDA graph now."""
        return self._graph is not None and self.cuda_graphs

    def _graphs_apply(self) -> bool:
        return self._cuda is not None and self.cuda_graphs and not self.byre.interpreted

    def run_stepwise(self, *inputs: torch.Tensor, before: StepHook | None = None,
                     after: StepHook | None = None) -> Slots:
        """Run the model calling ``before`` and ``after(step, compute, slots)`` around every compute (tools:
        a kernel's result checked against its reference on the operands it read). Returns the slots."""
        with self._lock:
            slots = self._prepare(self.check_inputs(inputs))
            with torch.inference_mode():
                for fn, step in self._kernels:
                    if before is not None:
                        before(step, self.byre.computes[step], slots)
                    fn(slots)
                    if after is not None:
                        after(step, self.byre.computes[step], slots)
            return slots

    def bound_kernels(self) -> list[tuple[int, Kernel]]:
        """(step, bound kernel) of every compute that runs, in plan order (tools time single computes with them:
        ``dict(session.bound_kernels())[step](slots)``)."""
        return [(step, fn) for fn, step in self._kernels]

    def begin_device_run(self) -> None:
        """Make the device context current and take the current torch stream for the next kernels (tools
        calling bound kernels themselves, e.g. inside a CUDA graph capture)."""
        if self._cuda is not None:
            self._cuda.begin_run()

    def capture_graph(self, *inputs: torch.Tensor) -> Callable[..., tuple[torch.Tensor, ...]]:
        """A CUDA graph of the whole plan: returns ``replay(*inputs)``, which copies the inputs into the
        graph's own buffers, replays every kernel with one launch and returns fresh outputs. Kernel launch
        overhead (a Python call per compute) is paid once, at capture. Not for plans with interpreted
        computes (they synchronise with the host)."""
        with self._lock:
            captured = self._capture(self.check_inputs(inputs))

        def replay(*new_inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with self._lock:
                return self._replay(captured, self.check_inputs(new_inputs))

        replay.graph = captured[0]  # type: ignore[attr-defined]
        return replay

    def _capture(self, inputs: list[torch.Tensor]
                 ) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], list[torch.Tensor]]:
        """(graph, its input buffers, its output buffers); the input buffers are copies of ``inputs`` the
        session owns (a caller's tensor may be freed or reused after the call)."""
        if self._cuda is None:
            raise ArtifactError("capture_graph: CUDA sessions only")
        host = [c.callee for c in self.byre.interpreted]
        if host:
            raise ArtifactError(f"capture_graph: @{host[0]} runs on the host; a CUDA graph cannot hold it")
        static_in = [t.clone() for t in inputs]
        slots = self._prepare(static_in)
        stream = torch.cuda.Stream(self.torch_device)
        stream.wait_stream(torch.cuda.current_stream(self.torch_device))
        with torch.cuda.stream(stream), torch.inference_mode():
            self._cuda.begin_run()
            for fn, _ in self._kernels:  # warm-up outside the capture (lazy module loads, first calls)
                fn(slots)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                self._cuda.begin_run()
                for fn, _ in self._kernels:
                    fn(slots)
        torch.cuda.current_stream(self.torch_device).wait_stream(stream)
        outs = [slots[vid] for vid, _ in self._out_plan]
        return graph, static_in, outs

    def _replay(self, captured: tuple[torch.cuda.CUDAGraph, list[torch.Tensor], list[torch.Tensor]],
                inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        graph, static_in, outs = captured
        for dst, src in zip(static_in, inputs, strict=True):
            dst.copy_(src)
        graph.replay()
        return tuple(o.clone() for o in outs)

    def _prepare(self, inputs: list[torch.Tensor], donated: frozenset[int] = frozenset()) -> Slots:
        slots = list(self._slots)
        for vid, t in zip(self.byre.inputs, inputs, strict=True):
            slots[vid] = t
        in_place = {self.byre.outputs[o]: inputs[i] for o, i in self.byre.donatable.items() if i in donated}
        for vid, shape, dtype in self._fresh:
            slots[vid] = in_place[vid] if vid in in_place else torch.empty(shape, dtype=dtype, device=self.torch_device)
        if self._cuda is not None:
            self._cuda.begin_run()
        return slots

    def _run(self, inputs: list[torch.Tensor], profile: bool, donated: frozenset[int] = frozenset()
             ) -> tuple[list[torch.Tensor], Slots]:
        slots = self._prepare(inputs, donated)
        with torch.inference_mode():
            if profile and self._cuda is not None:
                self._profile_cuda(slots)
            elif profile:
                self.last_profile = []
                computes = self.byre.computes
                for fn, step in self._kernels:
                    t0 = time.perf_counter()
                    fn(slots)
                    c = computes[step]
                    self.last_profile.append(ComputeTime(c.callee, c.kind, time.perf_counter() - t0, c.detail))
            else:
                for fn, _ in self._kernels:
                    fn(slots)
        outs = [slots[vid] if fresh else slots[vid].clone() for vid, fresh in self._out_plan]
        return outs, slots

    def _profile_cuda(self, slots: Slots) -> None:
        """Per-compute device time from CUDA events around each compute (an interpreted one includes its copies)."""
        stream = torch.cuda.current_stream(self.torch_device)
        marks = []
        for fn, step in self._kernels:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            fn(slots)
            end.record(stream)
            marks.append((step, start, end))
        torch.cuda.synchronize(self.torch_device)
        computes = self.byre.computes
        self.last_profile = [ComputeTime(computes[step].callee, computes[step].kind, start.elapsed_time(end) / 1e3,
                                         computes[step].detail) for step, start, end in marks]

    def run_checks(self, profile: bool = False) -> list:
        """Run a self-checking program (no inputs) and evaluate its ``check.*`` ops on the values the
        compiled pipeline produced, with the reference semantics of each check. Returns ``CheckResult``s."""
        with self._lock:
            _, slots = self._run(self.check_inputs(()), profile)
            reader = Reader(self.artifact.tensors)
            body = Block()
            consts: dict[int, Op] = {}
            for chk in self.byre.checks:
                operands = []
                for vid in chk["operands"]:
                    if vid not in consts:
                        v = self.byre.values[vid]
                        value = slots[vid].to("cpu", copy=True)
                        consts[vid] = shlo.Constant.create([], [v.type], {"value": value})
                        body.ops.append(consts[vid])
                    operands.append(consts[vid].result)
                attrs = {k: reader.attr(a) for k, a in chk["attrs"].items()}
                body.ops.append(Op.create(chk["name"], operands, [type_from_json(r) for r in chk["results"]], attrs,
                                          chk.get("loc", "")))
        return run_checks(Module({"main": Function("main", body)}))
