"""Artifact signatures: ed25519 over the manifest, which lists the SHA-256 of every file of the artifact.

The manifest's hashes alone detect accidents (a truncated copy, a flipped bit), not attacks: whoever can edit a
file can edit its hash too. A signature ties the manifest to a key its holder keeps: ``byteir-cat keygen``
makes a key pair, ``byteir-cat sign ARTIFACT --key KEY`` adds a signature to ``signatures.json`` beside the
manifest, and ``load(..., trusted_keys=[...])`` refuses an artifact that no trusted key signed (or whose
manifest changed after signing). Rewriting an artifact (``byteir-cat tune``) writes a new manifest, so it must
be signed again. ``cryptography`` is imported only when keys are made or checked: the runtime runs without it
where no signature is asked for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foundation.errors import ArtifactError

SIGNATURES = "signatures.json"
ALGORITHM = "ed25519"
CONTEXT = b"byteir-cat artifact manifest v1\0"  # signed before the manifest's bytes: a signature means only this

TrustedKey = str | os.PathLike | bytes


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ArtifactError("artifact signatures need the cryptography package (pip install cryptography)") from None
    return ed25519


def generate_key(path: str | os.PathLike) -> tuple[Path, Path]:
    """A new key pair: the private key at ``path`` (PEM, readable by its owner only, never overwritten) and the
    public key at ``path.pub`` (hex, one line: what ``trusted_keys`` and ``--trusted-key`` take)."""
    from cryptography.hazmat.primitives import serialization

    private = _ed25519().Ed25519PrivateKey.generate()
    key_path, pub_path = Path(path), Path(f"{path}.pub")
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ArtifactError(f"{key_path}: exists; a key is never overwritten (choose another path)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_text(_public_hex(private.public_key()) + "\n")
    return key_path, pub_path


def _public_hex(public: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _private_key(path: str | os.PathLike) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ArtifactError(f"{path}: not a readable private key ({type(e).__name__})") from None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise ArtifactError(f"{path}: not an {ALGORITHM} private key (byteir-cat keygen makes one)")
    return key


def public_key_hex(key: TrustedKey) -> str:
    """A trusted key as 64 hex digits: raw 32 bytes, hex text, or a file holding either (``KEY.pub``)."""
    if isinstance(key, bytes) and len(key) == 32:
        return key.hex()
    text = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
    candidate = text.strip().lower()
    if not (len(candidate) == 64 and all(c in "0123456789abcdef" for c in candidate)):
        try:
            candidate = Path(text).read_text().strip().lower()
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ArtifactError(f"trusted key {text[:80]!r}: neither 64 hex digits nor a readable .pub file "
                                f"({type(e).__name__})") from None
    if not (len(candidate) == 64 and all(c in "0123456789abcdef" for c in candidate)):
        raise ArtifactError(f"trusted key {text[:80]!r}: not an {ALGORITHM} public key (64 hex digits)")
    return candidate


def sign_artifact(art_dir: str | os.PathLike, key_path: str | os.PathLike) -> str:
    """Sign ``art_dir``'s manifest with the private key at ``key_path``; returns the public key (hex). Other
    keys' signatures of the same manifest are kept, stale ones (of an older manifest) dropped."""
    root = Path(art_dir)
    key = _private_key(key_path)
    try:
        manifest = (root / "manifest.json").read_bytes()
    except OSError:
        raise ArtifactError(f"{root}: no manifest.json to sign (not an artifact)") from None
    public = _public_hex(key.public_key())
    entries = [e for e in _entries(root, _read_signatures(root)) if e["public_key"] != public
               and _verifies(e, manifest)]
    entries.append({"algorithm": ALGORITHM, "public_key": public, "signature": key.sign(CONTEXT + manifest).hex()})
    tmp = root / f".{SIGNATURES}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"signatures": entries}, indent=1))
    os.replace(tmp, root / SIGNATURES)
    return public


def _read_signatures(root: Path) -> bytes | None:
    try:
        return (root / SIGNATURES).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ArtifactError(f"{root / SIGNATURES}: unreadable ({type(e).__name__})") from None


def _entries(root: Path, data: bytes | None) -> list[dict[str, str]]:
    if data is None:
        return []
    try:
        raw = json.loads(data)
        entries = raw["signatures"]
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("algorithm", "public_key", "signature"))
                for e in entries):
            raise TypeError("malformed entries")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ArtifactError(f"{root / SIGNATURES}: malformed ({type(e).__name__})") from None
    return entries


def _verifies(entry: dict[str, str], manifest: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    if entry["algorithm"] != ALGORITHM:
        return False
    try:
        public = _ed25519().Ed25519PublicKey.from_public_bytes(bytes.fromhex(entry["public_key"]))
        public.verify(bytes.fromhex(entry["signature"]), CONTEXT + manifest)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_manifest(root: Path, manifest: bytes, signatures: bytes | None, trusted_keys: Sequence[TrustedKey]
                    ) -> str:
    """Refuse (one-line ``ArtifactError``) unless a key of ``trusted_keys`` signed exactly these manifest bytes;
    returns that key (hex)."""
    trusted = [public_key_hex(k) for k in trusted_keys]
    if not trusted:
        raise ArtifactError(f"{root}: trusted_keys is empty: give the public keys whose signatures to accept")
    entries = _entries(root, signatures)
    if not entries:
        raise ArtifactError(f"{root}: the artifact is not signed, and trusted keys were given "
                            "(byteir-cat sign ARTIFACT --key KEY)")
    by_trusted = [e for e in entries if e["public_key"].lower() in trusted]
    if not by_trusted:
        raise ArtifactError(f"{root}: signed by {len(entries)} key(s), none of them trusted")
    for e in by_trusted:
        if _verifies(e, manifest):
            return e["public_key"].lower()
    raise ArtifactError(f"{root}: the signature of trusted key {by_trusted[0]['public_key'][:16]}... does not match "
                        "the manifest (edited after signing)")
