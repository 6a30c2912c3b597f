"""The undefined symbols of a relocatable ELF object: what the JIT must find in the process for the code to run.

LLVM's backend calls runtime helpers that the IR never declares (``__truncdfhf2`` for an f64 -> f16 conversion,
``__divti3`` for a 128-bit division); MCJIT patches an address it cannot find with 0, silently, and the kernel
then jumps to 0. Reading the object's symbol table lets the loader name the helper and refuse instead.
"""

from __future__ import annotations

import struct

_ELF_MAGIC = b"\x7fELF"
_SHT_SYMTAB = 2
_SHN_UNDEF = 0


def undefined_symbols(obj: bytes) -> list[str]:
    """Names of the symbols ``obj`` (a 64-bit little-endian ELF relocatable object) uses without defining; [] for
    an object in another format (the check is then not made)."""
    if obj[:4] != _ELF_MAGIC or obj[4] != 2 or obj[5] != 1:
        return []
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize) for i in range(shnum)]
    names: list[str] = []
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != _SHT_SYMTAB or not entsize:
            continue
        str_offset = sections[link][4]
        for at in range(offset + entsize, offset + size, entsize):  # entry 0 is the null symbol
            name_at, _, _, shndx = struct.unpack_from("<IBBH", obj, at)
            if shndx != _SHN_UNDEF or not name_at:
                continue
            end = obj.index(b"\0", str_offset + name_at)
            names.append(obj[str_offset + name_at:end].decode())
    return names
