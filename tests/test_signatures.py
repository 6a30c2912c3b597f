"""Issue 24, item 5: the manifest's SHA-256 list is an integrity check; signatures say who made an artifact.
``byteir-cat keygen`` / ``sign`` and ``load(..., trusted_keys=...)``: an unsigned artifact, one signed by
another key, one edited after signing (manifest fixed up) and one with a file the manifest does not cover are
refused when keys are given; ``causal_lm.json`` is a file of the manifest like every other."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from byteir_cat.causal_lm import META, load_causal_lm
from byteir_cat.cli import main
from byteir_cat.compiled_model import load
from foundation.errors import ArtifactError, InputError
from runtime.artifact import read
from runtime.signing import generate_key, sign_artifact
from tests.artifact_tools import host_kernel, model_expected, model_inputs, rehash


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return generate_key(d / "mine"), generate_key(d / "theirs")


@pytest.fixture
def signed(artifact, keys, tmp_path):
    d = tmp_path / "signed"
    shutil.copytree(artifact, d)
    sign_artifact(d, keys[0][0])
    return d


def _refused(art: Path, pub, match: str) -> None:
    with pytest.raises(ArtifactError, match=match) as e:
        load(art, trusted_keys=[pub])
    assert "\n" not in str(e.value)


def test_keygen_writes_a_private_key_for_its_owner_only(keys):
    (key, pub), _ = keys
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert len(pub.read_text().strip()) == 64
    with pytest.raises(ArtifactError, match="never overwritten"):
        generate_key(key)


def test_a_signed_artifact_loads_with_its_key(signed, keys):
    (_, pub), _ = keys
    xs = model_inputs()
    for trusted in ([pub], [str(pub)], [pub.read_text().strip()], [bytes.fromhex(pub.read_text().strip())]):
        torch.testing.assert_close(load(signed, trusted_keys=trusted).run(*xs)[0], model_expected(xs), rtol=1e-5,
                                   atol=1e-5)


def test_unsigned_or_wrongly_signed_is_refused(artifact, signed, keys):
    (_, pub), (their_key, their_pub) = keys
    _refused(artifact, pub, "not signed")
    _refused(signed, their_pub, "none of them trusted")
    load(artifact)  # without keys: the integrity check only, as before


def test_edited_after_signing_is_refused(signed, keys):
    (_, pub), _ = keys
    k = host_kernel(signed)
    k.write_text(k.read_text().replace("define", "define ", 1))
    rehash(signed)  # the hashes match again: only the signature tells
    load(signed)
    _refused(signed, pub, "does not match the manifest")


def test_a_file_outside_the_manifest_is_refused(signed, keys):
    (_, pub), _ = keys
    (signed / "kernels" / "extra.ll").write_text("; not listed\n")
    _refused(signed, pub, "not covered by the signed manifest")


def test_causal_lm_json_is_covered_by_the_manifest(artifact, keys, tmp_path):
    (key, pub), _ = keys
    art = read(artifact)
    art.meta[META] = json.dumps({"max_batch_size": 1})
    out = art.write(tmp_path / "lm")
    assert META in json.loads((out / "manifest.json").read_text())["files"]
    assert read(out).meta[META] == art.meta[META]
    (out / META).write_text(json.dumps({"max_batch_size": 64}))
    with pytest.raises(ArtifactError, match=f"{META} does not match its SHA-256"):
        load_causal_lm(out)
    with pytest.raises(ArtifactError, match="not signed"):
        load_causal_lm(out, trusted_keys=[pub])
    with pytest.raises(InputError, match=f"lists no {META}"):
        load_causal_lm(artifact)


def test_cli_keygen_sign_and_trusted_run(artifact, tmp_path, capsys):
    import numpy as np

    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    key = tmp_path / "k"
    assert main(["keygen", str(key)]) == 0
    xs = model_inputs()
    np.savez(tmp_path / "in.npz", x=xs[0].numpy(), w=xs[1].numpy(), b=xs[2].numpy())
    run = ["run", str(art), "--inputs", str(tmp_path / "in.npz"), "--trusted-key", f"{key}.pub"]
    assert main(run) == 1
    assert "not signed" in capsys.readouterr().err
    assert main(["sign", str(art), "--key", str(key)]) == 0
    assert main(run) == 0
