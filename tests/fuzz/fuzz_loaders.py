"""Coverage-guided fuzzing (atheris) of the loaders an untrusted file reaches: MLIR text (``to_stablehlo``) and
artifacts (``load``). Every input must end in a result or a one-line ``ByteirCatError``; anything else (another
exception, a crash, a hang) is a finding. Run ``make fuzz`` (``RUNS=N`` inputs, default 20000): new inputs
collect in ``out/fuzz-corpus``, seeded from ``tests/fuzz/corpus``.

An input's first byte picks the loader. Even: the rest is MLIR text. Odd: the second byte picks a file of a
small compiled artifact, the third whether the manifest's hashes are fixed up to match (as anyone who can
write the files can), and the rest replaces that file; the artifact is then loaded, and run unless its host
code was replaced (native code is trusted once verified: signatures keep foreign code out).
``--seed-corpus DIR`` writes the seed inputs.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["byteir_cat", "runtime"]):
    from byteir_cat.api import to_stablehlo
    from byteir_cat.compiled_model import load
    from foundation.errors import ByteirCatError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.artifact_tools import host_kernel, rehash  # noqa: E402
from tests.test_artifact import MODEL, _inputs  # noqa: E402

FILES = ["manifest.json", "model.byre.json", "weights.safetensors", "KERNEL", "causal_lm.json", "signatures.json"]
_seed: Path | None = None


def _artifact() -> Path:
    """A small artifact compiled once per fuzzing process."""
    global _seed
    if _seed is None:
        from byteir_cat.compiler import compile

        _seed = Path(tempfile.mkdtemp(prefix="byteir-cat-fuzz-")) / "seed"
        compile(MODEL, out_dir=_seed)
    return _seed


def _file(art: Path, choice: int) -> str:
    name = FILES[choice % len(FILES)]
    return str(host_kernel(art).relative_to(art)) if name == "KERNEL" else name


def one_input(data: bytes) -> None:
    if not data:
        return
    try:
        if data[0] % 2 == 0:
            to_stablehlo(data[1:].decode("utf-8", errors="replace"))
            return
        if len(data) < 3:
            return
        with tempfile.TemporaryDirectory() as tmp:
            art = Path(tmp) / "a"
            shutil.copytree(_artifact(), art)
            rel = _file(art, data[1])
            (art / rel).write_bytes(data[3:])
            if data[2] & 1 and rel != "manifest.json":
                rehash(art)
            model = load(art)
            if not rel.endswith(".ll"):
                model.run(*_inputs())
    except ByteirCatError as e:
        if "\n" in str(e) or not str(e):
            raise AssertionError(f"not a one-line error: {e!r}") from None


def seed_corpus(out: Path) -> None:
    """The seed inputs: the model's MLIR text, and each file of its artifact (as it is, hashes fixed)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "mlir-model").write_bytes(b"\0" + MODEL.encode())
    (out / "mlir-mhlo").write_bytes(b"\0" + b'func.func @main(%a: tensor<2xf32>) -> tensor<2xf32> {\n'
                                    b'  %0 = "mhlo.add"(%a, %a) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>\n'
                                    b'  return %0 : tensor<2xf32>\n}\n')
    art = _artifact()
    for i in range(4):
        rel = _file(art, i)
        (out / f"artifact-{Path(rel).name}").write_bytes(bytes([1, i, 1]) + (art / rel).read_bytes())


def main() -> None:
    if sys.argv[1:2] == ["--seed-corpus"]:
        seed_corpus(Path(sys.argv[2]))
        return
    _artifact()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
