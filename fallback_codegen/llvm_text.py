"""Respell floating-point literals of LLVM IR text for the LLVM that llvmlite carries.

The torch-mlir wheel's LLVM (newer than llvmlite's LLVM 22) prints FP constants as shortest decimals
that round to the value in the constant's own type (``4.471500e-02`` for a float), as exact-bit hex
``f0x3EAAAAAB``, or as ``+inf`` / ``-qnan``. LLVM 22 reads none of these for float/half/bfloat: it wants
decimals that are exact in the type, else hex (a float as the 16-digit hex of the equal double, half as
``0xH....``, bfloat as ``0xR....``). Every literal is rewritten to that hex form, with the type taken
from the nearest FP type word before it on the same line (``fmul float %0, 4.4e-02``, ``<2 x float>
<float 1.0, float 2.0>``, ``phi half [ 1.0, %b ]``), which is how LLVM's syntax places them.
"""

from __future__ import annotations

import re
import struct
from fractions import Fraction

_TOKEN = re.compile(
    r"(?P<type>\b(?:half|bfloat|float|double)\b)"
    r"|(?P<hex>\bf0x[0-9A-Fa-f]+\b)"
    r"|(?P<special>[-+](?:inf|qnan|snan|nan)(?:\(0x[0-9A-Fa-f]+\))?)"
    r"|(?P<dec>(?<![\w.%@#!\"])[-+]?\d+\.\d*(?:[eE][-+]?\d+)?(?![\w.]))"
)

_WIDTH = {"half": 16, "bfloat": 16, "float": 32, "double": 64}


def _bits_to_double(bits: int, ty: str) -> float:
    if ty == "double":
        return struct.unpack("<d", struct.pack("<Q", bits))[0]
    if ty == "float":
        return struct.unpack("<f", struct.pack("<I", bits))[0]
    if ty == "bfloat":
        return struct.unpack("<f", struct.pack("<I", bits << 16))[0]
    return struct.unpack("<e", struct.pack("<H", bits))[0]


def _double_to_bits(x: float, ty: str) -> int:
    """Bits of ``x`` in ``ty`` rounded to nearest (Python's float32/float16 packing rounds to nearest even)."""
    if ty == "double":
        return struct.unpack("<Q", struct.pack("<d", x))[0]
    if ty == "float":
        return struct.unpack("<I", struct.pack("<f", x))[0]
    if ty == "half":
        return struct.unpack("<H", struct.pack("<e", x))[0]
    f32 = struct.unpack("<I", struct.pack("<f", x))[0]
    return ((f32 + 0x7FFF + ((f32 >> 16) & 1)) >> 16) & 0xFFFF


def _nearest_bits(text: str, ty: str) -> int:
    """Bits of the ``ty`` value nearest to the decimal ``text`` (exact: neighbours compared as fractions)."""
    exact = Fraction(text)
    if exact == 0:
        return (1 << (_WIDTH[ty] - 1)) if text.startswith("-") else 0
    center = _double_to_bits(float(exact), ty)
    mask = (1 << _WIDTH[ty]) - 1
    best = None
    for bits in ((center - 1) & mask, center, (center + 1) & mask):
        value = _bits_to_double(bits, ty)
        if value != value or value in (float("inf"), float("-inf")):
            continue
        key = (abs(Fraction(value) - exact), bits & 1)
        if best is None or key < best[0]:
            best = (key, bits)
    return center if best is None else best[1]


def _special_bits(text: str, ty: str) -> int:
    negative = text.startswith("-")
    body = text[1:]
    width = _WIDTH[ty]
    exp_bits = {16: 5, 32: 8, 64: 11}[width] if ty != "bfloat" else 8
    mant_bits = width - 1 - exp_bits
    sign = (1 << (width - 1)) if negative else 0
    exponent = ((1 << exp_bits) - 1) << mant_bits
    if body.startswith("inf"):
        return sign | exponent
    payload = int(body[body.index("(") + 1:-1], 16) if "(" in body else 0
    quiet = 1 << (mant_bits - 1)
    if body.startswith("snan"):
        return sign | exponent | (payload or 1)
    return sign | exponent | quiet | payload


def _hex_literal(bits: int, ty: str) -> str:
    if ty == "half":
        return f"0xH{bits:04X}"
    if ty == "bfloat":
        return f"0xR{bits:04X}"
    double = bits if ty == "double" else _double_to_bits(_bits_to_double(bits, ty), "double")
    return f"0x{double:016X}"


def respell_float_literals(text: str) -> str:
    """``text`` with every FP literal in LLVM 22's spelling; other text is left byte-for-byte."""
    out = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith((";", "!", "source_filename", "target ")):
            out.append(line)
            continue
        ty: str | None = None
        pieces: list[str] = []
        pos = 0
        for m in _TOKEN.finditer(line):
            if m["type"]:
                ty = m["type"]
                continue
            if ty is None:
                continue
            if m["hex"]:
                bits = int(m["hex"][3:], 16)
            elif m["special"]:
                bits = _special_bits(m["special"], ty)
            else:
                bits = _nearest_bits(m["dec"], ty)
            pieces.append(line[pos:m.start()])
            pieces.append(_hex_literal(bits, ty))
            pos = m.end()
        pieces.append(line[pos:])
        out.append("".join(pieces))
    return "".join(out)


def with_target(text: str, triple: str, data_layout: str) -> str:
    """``text`` with its target triple and data layout set before LLVM parses it: the parser fixes load and
    store alignments from the data layout it sees (LLVM's default gives i64 a 4-byte alignment)."""
    lines = [line for line in text.splitlines(keepends=True)
             if not line.startswith(("target datalayout", "target triple"))]
    return f'target datalayout = "{data_layout}"\ntarget triple = "{triple}"\n' + "".join(lines)
