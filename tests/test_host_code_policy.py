"""Issue 24, item 3: loading an artifact JIT-links its host code, so the code may link against only what
generated kernels need. An artifact whose kernel file was edited, and whose manifest was fixed up to match (any
writer of the files can), is refused by name before any of its code runs."""

from __future__ import annotations

import shutil

import llvmlite.binding as llvm
import pytest
import torch

from byteir_cat.compiler import load
from foundation.errors import ArtifactError
from foundation.host_code import Signature, TensorSig, jit_compile, load_host_kernel
from foundation.host_code_policy import HostCodeRefused, check_host_module
from tests.artifact_tools import host_kernel, model_expected, model_inputs, rehash


@pytest.fixture
def copy(artifact, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(artifact, d)
    return d


def _append(art, text: str) -> str:
    k = host_kernel(art)
    k.write_text(k.read_text() + text)
    rehash(art)
    return str(k.relative_to(art))


def _refused(art, *words: str) -> None:
    with pytest.raises(ArtifactError) as e:
        load(art)
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_a_constructor_never_runs(copy, tmp_path):
    marker = tmp_path / "ran"
    cmd = f"touch {marker}".encode() + b"\0"
    escaped = "".join(f"\\{b:02X}" for b in cmd)
    rel = _append(copy, f"""
@cmd = private constant [{len(cmd)} x i8] c"{escaped}"
@llvm.global_ctors = appending global [1 x {{ i32, ptr, ptr }}] [{{ i32, ptr, ptr }} {{ i32 65535, ptr @evil, ptr null }}]
declare i32 @system(ptr)
define void @evil() {{
  %r = call i32 @system(ptr @cmd)
  ret void
}}
""")
    _refused(copy, "llvm.global_ctors", rel)
    assert not marker.exists()


def test_a_harmless_constructor_is_refused_too(copy):
    rel = _append(copy, """
@counter = global i32 0
@llvm.global_dtors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @bump, ptr null }]
define void @bump() {
  store i32 1, ptr @counter
  ret void
}
""")
    _refused(copy, "llvm.global_dtors", rel)


@pytest.mark.parametrize("symbol", ["system", "execve", "dlopen", "fopen"])
def test_libc_beyond_the_allow_list_is_refused_by_name(copy, symbol):
    rel = _append(copy, f"""
declare i32 @{symbol}(ptr)
define void @unused(ptr %p) {{
  %r = call i32 @{symbol}(ptr %p)
  ret void
}}
""")
    _refused(copy, f"calls {symbol}", rel)


def test_inline_assembly_and_external_variables_are_refused(copy, artifact, tmp_path):
    rel = _append(copy, """
define void @trap() {
  call void asm sideeffect "syscall", ""()
  ret void
}
""")
    _refused(copy, "inline assembly", rel)
    other = tmp_path / "other"
    shutil.copytree(artifact, other)
    rel = _append(other, """
@environ = external global ptr
define ptr @peek() {
  %p = load ptr, ptr @environ
  ret ptr %p
}
""")
    _refused(other, "external variable environ", rel)


def test_what_kernels_need_links_and_runs(copy):
    """libm, memcpy/memset and malloc/free are what generated code calls: allowed."""
    _append(copy, """
declare float @tanhf(float)
declare ptr @malloc(i64)
declare void @free(ptr)
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)
define float @helper(float %x, ptr %a, ptr %b) {
  %m = call ptr @malloc(i64 16)
  call void @llvm.memcpy.p0.p0.i64(ptr %a, ptr %b, i64 4, i1 false)
  call void @free(ptr %m)
  %y = call float @tanhf(float %x)
  ret float %y
}
""")
    xs = model_inputs()
    (out,) = load(copy).run(*xs)
    torch.testing.assert_close(out, model_expected(xs), rtol=1e-5, atol=1e-5)


def test_checked_on_every_jit_path():
    """The compile side's own kernels and the GPU emulator go through the same check (``jit_compile``)."""
    evil = "declare i32 @system(ptr)\ndefine void @k(ptr %p) {\n  %r = call i32 @system(ptr %p)\n  ret void\n}\n"
    with pytest.raises(HostCodeRefused, match="calls system"):
        jit_compile(evil, "k", "kernels/k.ll")
    with pytest.raises(HostCodeRefused, match="calls system"):
        load_host_kernel(evil, "k", Signature((TensorSig((1,), "f32"),), ()))
    from fallback_codegen.gpu_emulation import EmulatedGpuGroup

    nv = "declare i32 @__nv_system(ptr)\ndefine ptx_kernel void @k(ptr %p) {\n  %r = call i32 @__nv_system(ptr %p)\n" \
         "  ret void\n}\n"
    with pytest.raises(HostCodeRefused, match="calls system"):
        EmulatedGpuGroup(nv, [], [], Signature((), ()), "g")


def test_ifunc_and_module_assembly_are_refused():
    for text, what in (('module asm "nop"\ndefine void @k() {\n  ret void\n}\n', "inline assembly"),
                       ("define ptr @resolve() {\n  ret ptr null\n}\n@f = ifunc void (), ptr @resolve\n", "ifunc")):
        with pytest.raises(HostCodeRefused, match=what):
            check_host_module(llvm.parse_assembly(text), "kernels/x.ll")


BROKEN = """
define void @k() {
  %a = fadd float %b, 1.0
  %b = fadd float 0.0, 1.0
  ret void
}
!llvm.module.flags = !{!0}
!0 = !{i32 2, !"Debug Info Version", i32 3}
"""


def test_broken_ir_is_an_error_not_an_abort():
    """Found by ``make fuzz``: IR with the current debug-info version flag was verified inside LLVM's parser,
    which aborts the whole process on a broken module."""
    import subprocess
    import sys

    code = ("from foundation.host_code import KernelError, jit_compile\n"
            f"try:\n    jit_compile({BROKEN!r}, 'k', 'kernels/k.ll')\n"
            "except KernelError as e:\n    print('refused:', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "refused: kernel k (kernels/k.ll): LLVM could not read its IR: Instruction does not dominate" in proc.stdout
