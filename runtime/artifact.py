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
    causal_lm.json         (and other small JSON files of a kind of artifact) read by its loader [optional]
    manifest.json          format version, versions, target, arch, signature, plans, SHA-256 of every file
    signatures.json        ed25519 signatures of manifest.json (``runtime.signing``) [optional]

Writing builds the whole directory beside the target and renames it into place, the manifest last, so a
half-written artifact is never loadable; it never replaces anything but an older artifact, and that only when
asked to. Reading checks the manifest and every hash before anything runs, on the very bytes it then uses.
The hashes are an integrity check (a damaged copy is refused); that an artifact comes from whom it claims is
what a signature says (``read(..., trusted_keys=...)``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import os
import platform
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from foundation.byre_plan import ByreModule
from foundation.cuda_arch import CUDA_ARCHS
from foundation.errors import ArtifactError
from foundation.sym_shape import dim_from_json
from foundation.version import __version__
from runtime.signing import SIGNATURES, TrustedKey, verify_manifest

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
    meta: dict[str, str] = field(default_factory=dict)  # small files of a kind of artifact (causal_lm.json)
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

    def write(self, out_dir: str | Path, overwrite: bool = False) -> Path:
        """Write atomically to ``out_dir``: built beside it and renamed into place, the manifest written last.
        ``out_dir`` may be new or an empty directory; an artifact already there is replaced only with
        ``overwrite``, in one atomic exchange (a reader sees the old one or the new one, never a mix). Any
        other file or directory there is refused, and so is a second writer of the same directory at the same
        time: a one-line ``ArtifactError`` each."""
        self.root = write_directory(out_dir, overwrite, self.write_files)
        return self.root

    def write_files(self, tmp: Path) -> None:
        """Every file of the artifact into the new directory ``tmp`` (its manifest last)."""
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
        for rel, text in self.meta.items():
            (tmp / rel).write_text(text)
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


def write_directory(out_dir: str | Path, overwrite: bool, fill: Callable[[Path], None]) -> Path:
    """``fill`` a new directory beside ``out_dir`` and rename it into place, with ``Artifact.write``'s rules: onto
    nothing or an empty directory, or exchanged with an artifact (or artifact set) only with ``overwrite``; one
    writer at a time; nothing half-written left behind."""
    out = Path(os.path.abspath(out_dir))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out = out.parent.resolve() / out.name
        with _sole_writer(out):
            replacing = _replaceable(out, overwrite)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
            try:
                fill(tmp)
                _install(tmp, out, replacing)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        raise ArtifactError(f"{out}: cannot write the artifact: {e.strerror or type(e).__name__}") from None
    return out


SET_MANIFEST = "artifact_set.json"  # a directory of artifacts (a tensor-parallel model's ranks)


def is_artifact_set(path: Path) -> bool:
    """Whether ``path`` holds an artifact set's manifest (what ``write_directory`` may replace, like an artifact)."""
    try:
        manifest = json.loads((path / SET_MANIFEST).read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("members"), list)


def write_artifact_set(members: dict[str, Artifact], meta: dict[str, Any], out_dir: str | Path,
                       overwrite: bool = False) -> Path:
    """Artifacts as subdirectories of one directory (named by ``members``' keys), with ``SET_MANIFEST`` holding
    ``meta`` and the member names, written last; the whole set is installed at once."""
    for name in members:
        if not name.isidentifier():
            raise ArtifactError(f"artifact set member {name!r}: not a plain name")

    def fill(tmp: Path) -> None:
        for name, artifact in members.items():
            (tmp / name).mkdir()
            artifact.write_files(tmp / name)
        (tmp / SET_MANIFEST).write_text(json.dumps({**meta, "members": list(members)}, indent=1))
        os.chmod(tmp, 0o755)
        os.chmod(tmp / SET_MANIFEST, 0o644)

    out = write_directory(out_dir, overwrite, fill)
    for name, artifact in members.items():
        artifact.root = out / name
    return out


def read_artifact_set(path: str | Path) -> dict[str, Any]:
    """An artifact set's manifest (each member is checked by its own manifest when read)."""
    root = Path(path)
    try:
        manifest = json.loads((root / SET_MANIFEST).read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise ArtifactError(f"{root}: not an artifact set ({type(e).__name__} reading {SET_MANIFEST})") from None
    members = manifest.get("members") if isinstance(manifest, dict) else None
    if not isinstance(members, list) or not all(isinstance(m, str) and m.isidentifier() for m in members):
        raise ArtifactError(f"{root}/{SET_MANIFEST}: its member list is malformed")
    return manifest


@contextlib.contextmanager
def _sole_writer(out: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``out`` (flock) while writing it; a writer that finds it held is refused.
    The lock file is removed on release; a writer that locked a removed one takes the new one instead."""
    lock = out.parent / f".{out.name}.lock"
    for _ in range(16):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ArtifactError(f"{out}: another process is writing an artifact there now; this one was not "
                                "written") from None
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    else:
        raise ArtifactError(f"{out}: could not take the writer's lock {lock.name}")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def is_artifact(path: Path) -> bool:
    """Whether ``path`` is a directory holding a byteir-cat manifest (what ``write`` may replace)."""
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and "format_version" in manifest and isinstance(manifest.get("files"), dict)


def check_destination(out: str | os.PathLike, overwrite: bool) -> None:
    """Refuse, before any work, a destination that writing would refuse (something that is not a directory, a
    directory that is not an artifact, an artifact without ``overwrite``): a long compile should not end in that.
    Writing checks again (another process may write there meanwhile)."""
    _replaceable(Path(out), overwrite)


def _replaceable(out: Path, overwrite: bool) -> bool:
    """Whether ``write`` replaces an artifact at ``out`` (False: nothing or an empty directory is there);
    refuses what must not be replaced."""
    if not os.path.lexists(out):
        return False
    if out.is_symlink() or not out.is_dir():
        raise ArtifactError(f"{out}: exists and is not a directory; refusing to replace it with an artifact")
    entries = os.listdir(out)
    if not entries:
        return False
    if not is_artifact(out) and not is_artifact_set(out):
        raise ArtifactError(f"{out}: exists and is not a byteir-cat artifact ({len(entries)} entries); refusing to "
                            "replace it (write to a new or empty directory)")
    if not overwrite:
        raise ArtifactError(f"{out}: already holds an artifact; replace it with overwrite=True "
                            "(byteir-cat compile --force)")
    return True


def _install(tmp: Path, out: Path, replacing: bool) -> None:
    """Move the finished ``tmp`` to ``out``: onto nothing or an empty directory, or exchanged with the artifact
    there (which ``tmp`` then holds, for the caller to delete)."""
    if not replacing:
        try:
            os.rename(tmp, out)
        except OSError as e:
            raise ArtifactError(f"{out}: another process wrote there meanwhile ({e.strerror}); not replaced") from None
        return
    if _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.replace(out, old / "artifact")
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


@functools.cache
def _renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is missing."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


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
    """The parsed manifest of ``art_dir`` (a one-line ``ArtifactError`` when there is none)."""
    with _Directory(Path(art_dir)) as d:
        return _parse_manifest(d.root, d.read(MANIFEST))


def _parse_manifest(root: Path, data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"{root / MANIFEST}: unreadable manifest ({type(e).__name__})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{root / MANIFEST}: manifest is not a JSON object")
    return manifest


class _Directory:
    """An artifact directory opened once: every file is read relative to that directory (a rewrite that swaps
    a new directory in does not mix into the read), without following symbolic links, regular files only (a
    FIFO would hang the read)."""

    def __init__(self, root: Path):
        self.root = root

    def __enter__(self) -> _Directory:
        try:
            self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            raise ArtifactError(f"{self.root}: not an artifact directory") from None
        self.inode = os.fstat(self.fd).st_ino
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def replaced(self) -> bool:
        try:
            return os.stat(self.root).st_ino != self.inode
        except OSError:
            return True

    def read(self, rel: str, missing_ok: bool = False) -> bytes | None:
        parts = rel.split("/")
        if rel.startswith("/") or "\0" in rel or any(p in ("", ".", "..") for p in parts):
            raise ArtifactError(f"{self.root}: file name {rel!r} in the manifest is not a path inside the artifact")
        fds = []
        try:
            cur = self.fd
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
                cur = os.open(part, flags, dir_fd=cur)
                fds.append(cur)
            st = os.fstat(cur)
            if not stat.S_ISREG(st.st_mode):
                raise ArtifactError(f"{self.root}: {rel} is not a regular file")
            chunks = []
            while chunk := os.read(cur, 1 << 24):
                chunks.append(chunk)
            return b"".join(chunks)
        except FileNotFoundError:
            if missing_ok:
                return None
            if rel == MANIFEST:
                raise ArtifactError(f"{self.root}: no {MANIFEST} (not a byteir-cat artifact, or an unfinished one)"
                                    ) from None
            raise ArtifactError(f"{self.root}: file {rel} is missing") from None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ArtifactError(f"{self.root}: {rel} is or goes through a symbolic link (refused: an artifact's "
                                    "files are its own)") from None
            raise ArtifactError(f"{self.root}: {rel} is unreadable ({e.strerror or type(e).__name__})") from None
        finally:
            for fd in fds:
                os.close(fd)

    def files(self) -> list[str]:
        """Every regular file under the directory, as paths relative to it."""
        found = []
        for top, _, names, dfd in os.fwalk(dir_fd=self.fd):
            for name in names:
                if stat.S_ISREG(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    found.append(os.path.normpath(os.path.join(top, name)))
        return found


def read(art_dir: str | Path, target: str | None = None, trusted_keys: Sequence[TrustedKey] | None = None
         ) -> Artifact:
    """Read and verify an artifact: format version, target, arch, the SHA-256 of every file (on the bytes that
    are then used), and with ``trusted_keys`` a signature of the manifest by one of them (``runtime.signing``).
    An artifact rewritten while it is read is read again."""
    root = Path(art_dir)
    for _ in range(3):
        with _Directory(root) as d:
            try:
                return _read(d, target, trusted_keys)
            except ArtifactError:
                if not d.replaced():
                    raise
    raise ArtifactError(f"{root}: rewritten three times while being read; try again")


def _read(d: _Directory, target: str | None, trusted_keys: Sequence[TrustedKey] | None) -> Artifact:
    root = d.root
    manifest_bytes = d.read(MANIFEST)
    if trusted_keys is not None:
        verify_manifest(root, manifest_bytes, d.read(SIGNATURES, missing_ok=True), trusted_keys)
    manifest = _parse_manifest(root, manifest_bytes)
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
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ArtifactError(f"{root}: manifest lists no files, or lists them malformed")
    for rel in (PLAN, WEIGHTS):
        if rel not in files:
            raise ArtifactError(f"{root}: manifest does not list {rel}")
    if trusted_keys is not None:
        extra = sorted(set(d.files()) - set(files) - {MANIFEST, SIGNATURES})
        if extra:
            raise ArtifactError(f"{root}: file {extra[0]} is not covered by the signed manifest")
    data: dict[str, bytes] = {}
    for rel, digest in files.items():
        data[rel] = d.read(rel)
        if hashlib.sha256(data[rel]).hexdigest() != digest:
            raise ArtifactError(f"{root}: file {rel} does not match its SHA-256 in the manifest (corrupted or edited)")
    byre = _plan(root, PLAN, data[PLAN])
    names, profiles = manifest.get("plans", []), manifest.get("profiles", [])
    if not isinstance(names, list) or not isinstance(profiles, list) or not all(
            isinstance(n, str) for n in [*names, *profiles]) or not set(profiles) <= set(names):
        raise ArtifactError(f"{root}: the manifest's plans are malformed")
    plans = {}
    for name in names:
        rel = f"plans/{name}.byre.json"
        if rel not in files:
            raise ArtifactError(f"{root}: manifest does not list {rel}")
        plans[name] = _plan(root, rel, data[rel])
    try:
        tensors = load_safetensors(data.pop(WEIGHTS))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, KeyError, OverflowError) as e:
        raise ArtifactError(f"{root / WEIGHTS}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                            ) from None
    kernels: dict[str, str | bytes] = {}
    meta: dict[str, str] = {}
    for rel, raw in data.items():
        if rel.startswith("kernels/"):
            kernels[rel] = _text(root, rel, raw) if rel.endswith(TEXT_SUFFIXES) else raw
        elif "/" not in rel and rel.endswith(".json") and rel != PLAN:
            meta[rel] = _text(root, rel, raw)
    report = manifest.get("report", {})
    return Artifact(byre, kernels, tensors, art_target, str(manifest.get("arch")),
                    dict(report) if isinstance(report, dict) else {}, root.resolve(), plans,
                    [str(p) for p in profiles], meta)


def _text(root: Path, rel: str, raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ArtifactError(f"{root / rel}: not UTF-8 text") from None


def _plan(root: Path, rel: str, raw: bytes) -> ByreModule:
    try:
        return ByreModule.from_json(json.loads(raw))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"{root / rel}: unreadable ({type(e).__name__})") from None
    except ArtifactError as e:
        raise ArtifactError(f"{root / rel}: {e}") from None
