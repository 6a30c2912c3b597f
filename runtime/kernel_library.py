"""Loading a CUDA artifact's kernel libraries (``kernels/*.so``) with ctypes, from bytes that were verified.

``ctypes.CDLL`` runs a library's constructors as it loads it, so what it loads must be exactly what the
manifest vouches for. A plan's ``library`` is only a name of the artifact's own verified files (an absolute
path or one outside the artifact is refused; ``runtime.artifact.read`` refuses symlinks); the bytes read and
hashed there are written to a per-user cache folder (mode 0700, checked) under their SHA-256, atomically, read
back and hashed again, and that file is loaded. An existing file of that name is used only once its hash is
checked again. There is no shared, predictable path another user could plant a library at.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from foundation.errors import ArtifactError

CACHE_ENV = "BYTEIR_CAT_LIBRARY_CACHE"


def cache_folder() -> Path:
    """This user's folder of verified library copies (``$BYTEIR_CAT_LIBRARY_CACHE``, else
    ``$XDG_CACHE_HOME/byteir-cat/libraries`` or ``~/.cache/byteir-cat/libraries``), made 0700 and checked to be
    owned by this user and closed to others."""
    env = os.environ.get(CACHE_ENV)
    if env:
        folder = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = Path(base) / "byteir-cat" / "libraries"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ArtifactError(f"{folder}: the kernel library cache is not a directory owned by this user")
    if st.st_mode & 0o077:
        os.chmod(folder, 0o700)
        if os.lstat(folder).st_mode & 0o077:
            raise ArtifactError(f"{folder}: the kernel library cache is open to other users and cannot be closed")
    return folder


def _digest_of(path: Path) -> str | None:
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def verified_copy(data: bytes, name: str) -> Path:
    """A file holding exactly ``data``, named by its SHA-256 in ``cache_folder()``; ``name`` is for messages."""
    digest = hashlib.sha256(data).hexdigest()
    folder = cache_folder()
    path = folder / f"{digest}.so"
    if _digest_of(path) == digest:
        return path
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{digest}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o500)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if _digest_of(path) != digest:
        raise ArtifactError(f"kernel library {name}: its copy in {folder} does not hold the verified bytes")
    return path


def load_library(kernels: dict[str, str | bytes], rel: str) -> ctypes.CDLL:
    """Load the artifact's kernel library ``rel`` (a key of the artifact's verified ``kernels``)."""
    data = kernels.get(rel)
    if not isinstance(data, bytes) or not rel.startswith("kernels/"):
        raise ArtifactError(f"kernel library {rel!r} is not a file of the artifact")
    path = verified_copy(data, rel)
    try:
        return ctypes.CDLL(str(path))
    except OSError as e:
        raise ArtifactError(f"kernel library {rel}: cannot be loaded: {str(e).splitlines()[0]}") from None
