"""Helpers of the tests that play an attacker or a fault: edit an artifact's files and fix its manifest up, as
anyone who can write the files can (the SHA-256 list is an integrity check, not a signature)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def rehash(art: Path) -> None:
    """Make the manifest's SHA-256 list match the files as they are now."""
    m = art / "manifest.json"
    manifest = json.loads(m.read_text())
    manifest["files"] = {rel: hashlib.sha256((art / rel).read_bytes()).hexdigest() for rel in manifest["files"]}
    m.write_text(json.dumps(manifest, indent=1))


def host_kernel(art: Path) -> Path:
    """The artifact's (first) host-code kernel file."""
    return sorted((art / "kernels").glob("*.ll"))[0]
