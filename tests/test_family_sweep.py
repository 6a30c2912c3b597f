"""The family sweep: every Hugging Face architecture of the catalog through every door (``tests/family_sweep``).

Each cell must be right or refused in one line, and must be what docs/MODELS.md says it is: a wrong or
crashed cell fails, and so does a cell whose status changed without the table being regenerated
(``make models-table``). The default run keeps a slice that covers each kind of model and each door; the rest
runs under ``-m slow`` (``make test-slow``).
"""

from __future__ import annotations

import pytest

from tests.family_sweep.catalog import FAMILIES
from tests.family_sweep.doors import DOORS, applies, run_cell
from tests.family_sweep.table import TABLE, load_results, render

# one of each kind and door, the defects this sweep was built on (Falcon's multi-query head, GPT-2's cache
# output), MLA with complex rotary and unsorted top-k routing (DeepSeek-V2); generation of other families (ALiBi,
# MoE, encoder-decoders) is tested on its own in test_causal_lm, test_moe and test_seq2seq
DEFAULT_SLICE = {
    ("gpt2", "compile"), ("falcon_mqa", "compile"), ("llama", "generate"), ("qwen2", "torch.compile"),
    ("deepseek_v2", "compile"), ("bert", "onnx"), ("t5", "compile"), ("vit", "torch.compile"),
    ("wav2vec2", "compile"),
}
RESULTS = load_results()


def _cells():
    for name, family in FAMILIES.items():
        for door in DOORS:
            if applies(family, door):
                marks = [] if (name, door) in DEFAULT_SLICE else [pytest.mark.slow]
                yield pytest.param(name, door, id=f"{name}-{door}", marks=marks)


@pytest.mark.parametrize("family, door", list(_cells()))
def test_cell(family, door):
    cell = run_cell(family, door)
    assert cell.status not in ("wrong", "crash"), f"{family} through {door}: {cell.status}: {cell.detail}"
    assert "\n" not in cell.detail
    recorded = RESULTS.get((family, door))
    assert recorded is not None, f"{family}/{door} is not in docs/MODELS.md: run make models-table"
    assert cell.status == recorded["status"], (f"{family}/{door} is {cell.status} ({cell.detail}); docs/MODELS.md "
                                               f"says {recorded['status']}: run make models-table")


def test_table_is_rendered_from_the_recorded_results():
    """docs/MODELS.md is what the script writes from results.json (nobody edited one without the other), and
    every cell of the catalog is in it with no wrong or crashed cell."""
    assert TABLE.read_text() == render(RESULTS)
    expected = {(name, door) for name, fam in FAMILIES.items() for door in DOORS if applies(fam, door)}
    assert expected <= set(RESULTS), sorted(expected - set(RESULTS))[:5]
    bad = [(k, r["detail"]) for k, r in RESULTS.items() if r["status"] in ("wrong", "crash")]
    assert not bad, bad[:5]
    assert len(FAMILIES) >= 40
