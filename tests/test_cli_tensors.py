"""Issue 24, item 8: ``byteir-cat run --inputs`` bound a file's arrays by their order, ignoring their names, and
bf16 could not go through the CLI (npz has no bfloat16). Now arrays bind by name (unknown or missing names
refused; by number for arg0..argN; in file order only for a model without input names), and .safetensors
carries every dtype in and out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from byteir_cat.cli import main
from byteir_cat.compiler import compile
from tests.artifact_tools import MODEL, model_expected, model_inputs

NAMED = MODEL.replace("%x: tensor<4x8xf32>", '%x: tensor<4x8xf32> loc("x")') \
             .replace("%w: tensor<8x16xf32>", '%w: tensor<8x16xf32> loc("w")') \
             .replace("%b: tensor<16xf32>)", '%b: tensor<16xf32> loc("b"))')

BF16 = """
func.func @main(%x: tensor<4x8xbf16>, %y: tensor<4x8xbf16>) -> (tensor<4x8xbf16>, tensor<4x8xf32>) {
  %e = stablehlo.exponential %x : tensor<4x8xbf16>
  %m = stablehlo.multiply %e, %y : tensor<4x8xbf16>
  %f = stablehlo.convert %m : (tensor<4x8xbf16>) -> tensor<4x8xf32>
  return %m, %f : tensor<4x8xbf16>, tensor<4x8xf32>
}
"""


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    d = tmp_path_factory.mktemp("named") / "art"
    assert compile(NAMED, out_dir=d).byre.input_names == ["x", "w", "b"]
    return d


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(["run", *map(str, args)])
    err = capsys.readouterr().err
    return code, err


def test_inputs_bind_by_name_not_order(named, tmp_path, capsys):
    x, w, b = model_inputs()
    np.savez(tmp_path / "in.npz", b=b.numpy(), x=x.numpy(), w=w.numpy())  # not the model's order
    code, err = _run(capsys, named, "--inputs", tmp_path / "in.npz", "--out", tmp_path / "out.npz")
    assert code == 0, err
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "out.npz")["output0"]), model_expected([x, w, b]),
                               rtol=1e-5, atol=1e-5)
    save_file({"arg2": b, "arg0": x, "arg1": w}, str(tmp_path / "args.safetensors"))
    code, err = _run(capsys, named, "--inputs", tmp_path / "args.safetensors", "--out", tmp_path / "o.safetensors")
    assert code == 0, err
    torch.testing.assert_close(load_file(str(tmp_path / "o.safetensors"))["output0"], model_expected([x, w, b]),
                               rtol=1e-5, atol=1e-5)


def test_unknown_or_missing_names_are_refused(named, tmp_path, capsys):
    x, w, b = model_inputs()
    np.savez(tmp_path / "typo.npz", x=x.numpy(), weight=w.numpy(), b=b.numpy())
    code, err = _run(capsys, named, "--inputs", tmp_path / "typo.npz")
    assert code == 1 and err.count("\n") == 1
    assert "unknown name(s) weight" in err and "missing w" in err and "inputs are x, w, b" in err
    np.savez(tmp_path / "short.npz", x=x.numpy(), b=b.numpy())
    code, err = _run(capsys, named, "--inputs", tmp_path / "short.npz")
    assert code == 1 and "missing w" in err


def test_bf16_round_trips_through_safetensors(tmp_path, capsys):
    art = tmp_path / "art"
    compile(BF16, out_dir=art)
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(4, 8, generator=g).to(torch.bfloat16) for _ in range(2))
    save_file({"arg0": x, "arg1": y}, str(tmp_path / "in.safetensors"))
    code, err = _run(capsys, art, "--inputs", tmp_path / "in.safetensors", "--out", tmp_path / "out.safetensors")
    assert code == 0, err
    out = load_file(str(tmp_path / "out.safetensors"))
    assert out["output0"].dtype == torch.bfloat16 and out["output1"].dtype == torch.float32
    expected = (x.float().exp().to(torch.bfloat16) * y)
    torch.testing.assert_close(out["output0"], expected, rtol=1e-2, atol=1e-2)
    code, err = _run(capsys, art, "--inputs", tmp_path / "in.safetensors", "--out", tmp_path / "out.npz")
    assert code == 1 and err.count("\n") == 1 and "bfloat16" in err and ".safetensors" in err
    import ml_dtypes

    np.savez(tmp_path / "bf16.npz", arg0=x.float().numpy().astype(ml_dtypes.bfloat16),
             arg1=y.float().numpy().astype(ml_dtypes.bfloat16))
    code, err = _run(capsys, art, "--inputs", tmp_path / "bf16.npz")
    assert code == 1 and err.count("\n") == 1 and "use a .safetensors file" in err
