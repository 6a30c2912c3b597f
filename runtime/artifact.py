"""The artifact directory: what ``compile`` writes and ``load`` reads (DESIGN, "The artifact").

    model.byre.mlir        the ByRE module, generic MLIR, for people and tools
    model.byre.json        the same plan, read by the runtime (no MLIR needed where the model runs)
    kernels/<group>.ll     host code of each fusion group (LLVM IR text, JIT-compiled at load)   [cpu]
    kernels/<symbol>.so    CUTLASS kernel of each distinct CAT op (C ABI of ait_codegen.abi)    [cuda]
    kernels/<group>.ptx    NVPTX kernels of each fusion group, .cubin beside it when ptxas ran,
    kernels/<group>.nvptx.ll  and the same kernels' LLVM IR (the CPU emulator of tests runs it)   [cuda]
    kernels/candidates/<symbol>/<other>.so  other builds of a GEMM, for ``byteir-cat tune``   [cuda, optional]
    weights.safetensors    weights and the constants of serialised subgraphs, of every plan (stored once)
    plans/<name>.byre.json more plans over the same weights [optional]: the steps of a causal LM (prefill,
    plans/<name>.byre.mlir decode), or profiles: the same model for another range of sizes (dynamic shapes)
    manifest.json          format version, versions, target, arch, signature, plans, SHA-256 of every file

Writing builds the whole directory beside the target and renames it into place, the manifest last, so a
half-written artifact is never loadable; reading checks the manifest and every hash before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from byteir_cat import __version__
from byteir_cat.core.byre_plan import ByreModule
from byteir_cat.core.cuda_arch import CUDA_ARCHS
from byteir_cat.core.errors import ArtifactError
from byteir_cat.core.sym_shape import dim_from_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PLAN = "model.byre.json"
MLIR = "model.byre.mlir"
WEIGHTS = "weights.safetensors"
TARGETS = ("cpu", "cuda")
TEXT_SUFFIXES = (".ll", ".ptx")  # kernel files read as text; every other kernel file is bytes


def host_arch() -> str:
    """The CPU architecture kernels are JIT-compiled for at load (the IR is retargeted to the exact CPU)."""
    return platform.machine() or "unknown"


@dataclass
class Artifact:
    byre: ByreModule
    kernels: dict[str, str | bytes]  # path relative to the artifact ("kernels/x.ll") -> text, or bytes (.so)
    tensors: dict[str, torch.Tensor]
    target: str = "cpu"
    arch: str = field(default_factory=host_arch)
    report: dict[str, Any] = field(default_factory=dict)  # compile report: timings, memory, interpreted computes
    root: Path | None = None  # the directory it was read from or written to (shared libraries load from there)
    plans: dict[str, ByreModule] = field(default_factory=dict)  # more plans over the same weights and kernels
    profiles: list[str] = field(default_factory=list)  # plans that run ``byre``'s model at other sizes
    _on_device: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def weight_on(self, key: str, device: torch.device) -> torch.Tensor:
        """Tensor ``key`` on ``device``, copied there once for every session of this artifact (the prefill and
        decode steps of a causal LM read the same weights)."""
        t = self.tensors[key]
        if t.device == device:
            return t
        cached = self._on_device.get((key, str(device)))
        if cached is None:
            cached = self._on_device[key, str(device)] = t.to(device)
        return cached

    def plan(self, name: str | None) -> ByreModule:
        """The main plan (None) or a named one."""
        if name is None:
            return self.byre
        if name not in self.plans:
            raise ArtifactError(f"the artifact has no plan {name!r} (plans: {', '.join(sorted(self.plans)) or 'none'})")
        return self.plans[name]

    def add_plan(self, name: str, byre: ByreModule, kernels: dict[str, str | bytes], tensors: dict[str, torch.Tensor],
                 profile: bool = False) -> None:
        """Add another plan, compiled on its own: a tensor equal to one the artifact has already (a weight both
        plans read) is stored once and the plan's references point at it; its kernel files must not clash."""
        if name in self.plans or not name.isidentifier():
            raise ArtifactError(f"plan name {name!r}: taken, or not an identifier")
        for rel, data in kernels.items():
            if rel in self.kernels and self.kernels[rel] != data:
                raise ArtifactError(f"plan {name}: kernel file {rel} differs from the one of that name already there")
        digests = {_content(t): k for k, t in self.tensors.items()}
        rename: dict[str, str] = {}
        for key, t in tensors.items():
            digest = _content(t)
            if digest not in digests:
                digests[digest] = f"{name}/{key}"
                self.tensors[digests[digest]] = t
            rename[key] = digests[digest]
        self.kernels.update(kernels)
        self.plans[name] = ByreModule.from_json(_renamed_tensors(byre.to_json(), rename))
        if profile:
            self.profiles.append(name)

    def signature(self) -> dict[str, list[dict[str, Any]]]:
        vals = self.byre.values

        def sig(vid: int, name: str) -> dict[str, Any]:
            v = vals[vid]
            d = {"name": name, "shape": list(v.type.shape), "dtype": v.type.dtype}
            if v.dims is not None:  # dynamic shapes: "shape" is the upper bound, "dims" says what each size is
                d["dims"] = [str(x) for x in (dim_from_json(x) for x in v.dims)]
            return d

        names = self.byre.input_names or []
        return {
            "inputs": [sig(v, names[i] if i < len(names) else f"input{i}") for i, v in enumerate(self.byre.inputs)],
            "outputs": [sig(v, f"output{i}") for i, v in enumerate(self.byre.outputs)],
        }

    def write(self, out_dir: str | Path) -> Path:
        """Write atomically to ``out_dir`` (replacing an older artifact there)."""
        out = Path(out_dir).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            (tmp / "kernels").mkdir()
            (tmp / MLIR).write_text(self.byre.to_mlir())
            (tmp / PLAN).write_text(json.dumps(self.byre.to_json(), indent=1))
            if self.plans:
                (tmp / "plans").mkdir()
            for name, plan in self.plans.items():
                (tmp / "plans" / f"{name}.byre.mlir").write_text(plan.to_mlir())
                (tmp / "plans" / f"{name}.byre.json").write_text(json.dumps(plan.to_json(), indent=1))
            for rel, data in self.kernels.items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                if isinstance(data, bytes):
                    (tmp / rel).write_bytes(data)
                else:
                    (tmp / rel).write_text(data)
            save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(tmp / WEIGHTS))
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            manifest = {
                "format_version": FORMAT_VERSION, "byteir_cat_version": __version__, "target": self.target,
                "arch": self.arch, **self.signature(), "report": self.report,
                "plans": sorted(self.plans), "profiles": list(self.profiles),
                "files": {rel: _sha256(tmp / rel) for rel in files},
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            for p in [tmp, *tmp.rglob("*")]:
                os.chmod(p, 0o755 if p.is_dir() else 0o644)
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
                os.replace(out, old / "artifact")
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.root = out
        return out


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes (in its own dtype, C order)."""
    data = t.detach().contiguous().cpu().reshape(-1)
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()


def _content(t: torch.Tensor) -> tuple[str, tuple[int, ...], str]:
    """What makes two tensors the same stored tensor."""
    return str(t.dtype), tuple(t.shape), tensor_digest(t)


def _renamed_tensors(node: Any, rename: dict[str, str]) -> Any:
    """A plan's JSON with every tensor reference (weight keys, ``{"tensor": key}``) renamed."""
    if isinstance(node, dict):
        out = {k: _renamed_tensors(v, rename) for k, v in node.items()}
        if isinstance(out.get("tensor"), str) and len(out) == 1:
            out["tensor"] = rename.get(out["tensor"], out["tensor"])
        if out.get("storage") == "weight" and isinstance(out.get("key"), str):
            out["key"] = rename.get(out["key"], out["key"])
        return out
    if isinstance(node, list):
        return [_renamed_tensors(x, rename) for x in node]
    return node


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(art_dir: Path) -> dict[str, Any]:
    path = art_dir / MANIFEST
    if not art_dir.is_dir():
        raise ArtifactError(f"{art_dir}: not an artifact directory")
    if not path.is_file():
        raise ArtifactError(f"{art_dir}: no {MANIFEST} (not a byteir-cat artifact, or an unfinished one)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: unreadable manifest ({type(e).__name__})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: manifest is not a JSON object")
    return manifest


def read(art_dir: str | Path, target: str | None = None) -> Artifact:
    """Read and verify an artifact: format version, target, arch, and the SHA-256 of every file."""
    root = Path(art_dir)
    manifest = read_manifest(root)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{root}: artifact format version {version!r}, this runtime reads version {FORMAT_VERSION}"
                            " (recompile the model)")
    art_target = manifest.get("target")
    if art_target not in TARGETS:
        raise ArtifactError(f"{root}: unknown target {art_target!r} in the manifest")
    if target is not None and art_target != target:
        raise ArtifactError(f"{root}: compiled for target {art_target}, cannot run on {target}")
    if art_target == "cpu" and manifest.get("arch") != host_arch():
        raise ArtifactError(f"{root}: compiled for {manifest.get('arch')} CPUs, this machine is {host_arch()}")
    if art_target == "cuda" and manifest.get("arch") not in CUDA_ARCHS:
        raise ArtifactError(f"{root}: CUDA arch {manifest.get('arch')!r} in the manifest is not one of {CUDA_ARCHS}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{root}: manifest lists no files")
    for rel in (PLAN, WEIGHTS):
        if rel not in files:
            raise ArtifactError(f"{root}: manifest does not list {rel}")
    for rel, digest in files.items():
        p = root / rel
        if ".." in Path(rel).parts or not p.is_file():
            raise ArtifactError(f"{root}: file {rel} is missing")
        if _sha256(p) != digest:
            raise ArtifactError(f"{root}: file {rel} does not match its SHA-256 in the manifest (corrupted or edited)")
    try:
        plan = json.loads((root / PLAN).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{root / PLAN}: unreadable ({type(e).__name__})") from None
    byre = ByreModule.from_json(plan)
    names, profiles = manifest.get("plans", []), manifest.get("profiles", [])
    if not isinstance(names, list) or not isinstance(profiles, list) or not set(profiles) <= set(names):
        raise ArtifactError(f"{root}: the manifest's plans are malformed")
    plans = {}
    for name in names:
        rel = f"plans/{name}.byre.json"
        if rel not in files:
            raise ArtifactError(f"{root}: manifest does not list {rel}")
        try:
            plans[name] = ByreModule.from_json(json.loads((root / rel).read_text()))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{root / rel}: unreadable ({type(e).__name__})") from None
    try:
        tensors = load_file(str(root / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise ArtifactError(f"{root / WEIGHTS}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                            ) from None
    kernels: dict[str, str | bytes] = {
        rel: (root / rel).read_text() if rel.endswith(TEXT_SUFFIXES) else (root / rel).read_bytes()
        for rel in files if rel.startswith("kernels/")}
    return Artifact(byre, kernels, tensors, art_target, str(manifest.get("arch")), dict(manifest.get("report", {})),
                    root.resolve(), plans, [str(p) for p in profiles])
