"""The profiler: one generated CUDA program per GEMM problem that times every candidate configuration on the
device (warm-up, then CUDA-event timing) and prints one JSON line per candidate; ``profile`` builds and runs
it and records the fastest in the tuning cache as 'profiled'. Without a GPU the program still builds (tests
compile it) but is not run, and the heuristic's 'unprofiled' record stands."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ait_codegen.abi import KernelSpec, preamble
from ait_codegen.build import BuildJob, compile_all
from ait_codegen.candidates import GemmConfig, candidates
from ait_codegen.elements import cutlass_type
from ait_codegen.errors import CodegenError, UnsupportedKernel
from ait_codegen.gemm_glue import ARGS_STRUCT, DEVICE_PERMUTE
from ait_codegen.gemm_problem import GemmProblem
from ait_codegen.source import include_block
from ait_codegen.tuning_cache import TuningCache
from families.gemm import cutlass2 as gemm
from families.gemm import cutlass3 as gemm_sm90
from families.gemm.cutlass import GemmFamily
from families.gemm.problem import problem_for

MAIN = """
template <typename T>
__global__ void cat_fill(T* p, int64_t n, unsigned seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = T(float((unsigned(i) * 2654435761u + seed) % 1000u) / 1000.0f - 0.5f);
}

typedef int (*CatEntry)(void* const*, void*, const int64_t*, void*, size_t, cudaStream_t);
typedef size_t (*CatWorkspace)(void);

int main(int argc, char** argv) {
  const int iters = argc > 1 ? atoi(argv[1]) : 20;
  const char* names[] = {@names@};
  CatEntry entries[] = {@entries@};
  CatWorkspace workspaces[] = {@workspaces@};
  const int64_t sizes[] = {@sizes@};
  const int n_operands = @n_operands@, n_candidates = @n_candidates@;
  void* operands[8];
  for (int i = 0; i < n_operands; ++i) {
    if (cudaMalloc(&operands[i], sizes[i] * sizeof(@ctype@)) != cudaSuccess) {
      printf("{\\"error\\": \\"out of memory\\"}\\n");
      return 1;
    }
    cat_fill<@ctype@><<<256, 256>>>(static_cast<@ctype@*>(operands[i]), sizes[i], 17u * i + 1u);
  }
  void* result;
  cudaMalloc(&result, @result_elems@LL * sizeof(@ctype@));
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int c = 0; c < n_candidates; ++c) {
    size_t ws_bytes = workspaces[c]();
    void* ws = nullptr;
    if (ws_bytes) cudaMalloc(&ws, ws_bytes);
    int rc = 0;
    for (int w = 0; w < 3 && rc == 0; ++w) rc = entries[c](operands, result, nullptr, ws, ws_bytes, stream);
    cudaEventRecord(start, stream);
    for (int it = 0; it < iters && rc == 0; ++it) rc = entries[c](operands, result, nullptr, ws, ws_bytes, stream);
    cudaEventRecord(stop, stream);
    cudaError_t err = cudaEventSynchronize(stop);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, stop);
    if (err != cudaSuccess && rc == 0) rc = CAT_LAUNCH_FAILED;
    printf("{\\"config\\": \\"%s\\", \\"status\\": %d, \\"ms\\": %.6f}\\n", names[c], rc, rc ? -1.0 : ms / iters);
    fflush(stdout);
    if (ws) cudaFree(ws);
  }
  return 0;
}
"""


@dataclass(frozen=True)
class ProfiledCandidate:
    config: GemmConfig
    status: int
    ms: float


def render_profiler(spec: KernelSpec, arch: str, configs: Sequence[GemmConfig]) -> str:
    """A standalone CUDA program timing ``configs`` for ``spec`` (configs the renderer rejects are left out)."""
    problem = problem_for(spec.op, spec.operands)
    bodies, names, includes = [], [], set()
    for i, cfg in enumerate(configs):
        sym = f"cat_prof_{i}"
        try:
            if cfg.arch == "sm_90a":
                bodies.append(gemm_sm90.render_sm90(sym, spec, problem, cfg))
                includes.update(gemm_sm90.INCLUDES)
            else:
                bodies.append(gemm.render_sm80(sym, spec, problem, cfg))
                includes.update(gemm.INCLUDES)
        except UnsupportedKernel:
            continue
        names.append((sym, cfg.name))
    if not names:
        raise UnsupportedKernel(spec.op.name, f"no candidate renders for {arch}")
    fill = {
        "names": ", ".join(f'"{n}"' for _, n in names),
        "entries": ", ".join(s for s, _ in names),
        "workspaces": ", ".join(f"{s}_workspace_bytes" for s, _ in names),
        "sizes": ", ".join(str(max(1, t.numel)) for t in spec.operands),
        "n_operands": len(spec.operands), "n_candidates": len(names),
        "ctype": cutlass_type(problem.dtype), "result_elems": max(1, spec.result.numel),
    }
    main = MAIN
    for key, value in fill.items():
        main = main.replace(f"@{key}@", str(value))
    head = "#include <cstdio>\n#include <cstdlib>\n" + preamble() + include_block([tuple(sorted(includes))])
    return "\n".join([head, ARGS_STRUCT, DEVICE_PERMUTE, *bodies, main])


def profiler_job(spec: KernelSpec, arch: str, configs: Sequence[GemmConfig] | None = None,
                 output: str = "executable") -> BuildJob:
    if type(spec.op) not in GemmFamily.declarations:  # the profiler times GEMM configurations
        raise UnsupportedKernel(spec.op.name, "only GEMM-family ops are profiled")
    problem = problem_for(spec.op, spec.operands)
    configs = list(configs) if configs is not None else _default_configs(problem, arch)
    return BuildJob(f"profiler:{spec.op.name}", render_profiler(spec, arch, configs), "device", arch, output)


def _default_configs(problem: GemmProblem, arch: str) -> list[GemmConfig]:
    out = candidates(problem, arch)
    if arch == "sm_90a":
        out += candidates(problem, "sm_80", limit=2)
    return out


def parse_output(text: str, configs: Sequence[GemmConfig]) -> list[ProfiledCandidate]:
    by_name = {c.name: c for c in configs}
    found = []
    for line in text.splitlines():
        if line.startswith("{") and '"config"' in line:
            row = json.loads(line)
            found.append(ProfiledCandidate(by_name[row["config"]], int(row["status"]), float(row["ms"])))
    return found


def profile(spec: KernelSpec, arch: str, cache: TuningCache, configs: Sequence[GemmConfig] | None = None,
            timeout_s: float = 600.0) -> ProfiledCandidate:
    """Build and run the profiler on this machine's GPU; store and return the fastest working candidate."""
    if type(spec.op) not in GemmFamily.declarations:  # the profiler times GEMM configurations
        raise UnsupportedKernel(spec.op.name, "only GEMM-family ops are profiled")
    problem = problem_for(spec.op, spec.operands)
    configs = list(configs) if configs is not None else _default_configs(problem, arch)
    exe = compile_all([profiler_job(spec, arch, configs)])[0].path
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=timeout_s)
    rows = [r for r in parse_output(proc.stdout, configs) if r.status == 0]
    if not rows:
        raise CodegenError(spec.op.name, f"profiler: no candidate ran ({(proc.stderr or proc.stdout)[-200:]})")
    best = min(rows, key=lambda r: r.ms)
    # recorded under the target arch, whichever kernel generation won (a 2.x kernel can win on sm_90a)
    cache.store(problem, arch, best.config, profiled=True, time_ms=best.ms)
    return best
