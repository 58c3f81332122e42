"""One seed helper (issue 31): every purpose gives the seed its call site derived by hand before, so cached
artifacts and records stay bit for bit what they were; an unknown purpose is an error naming the known ones."""

import pytest

from relearnbench import seeds

# (purpose, indices, the derivation each call site used before relearnbench.seeds)
BEFORE = [
    ("unlearn", (), lambda s: s), ("attack", (), lambda s: s + 1),  # runner; export copied + 1
    ("generated-images", (), lambda s: s + 10_000),  # data._generated
    ("eval-forget", (), lambda s: s * 7 + 0), ("eval-related", (), lambda s: s * 7 + 1),  # Evaluation.images
    ("eval-unrelated", (), lambda s: s * 7 + 2), ("eval-benign", (), lambda s: s * 7 + 3),
    ("eval-prompt-file", (), lambda s: s * 7 + 5),  # Evaluation.sample_prompts
    ("prompt", (3,), lambda s: s * 100003 + 3),  # diffusion.image_jobs, unlearndiffatk
    ("salun-retain-data", (), lambda s: s + 1), ("retain-data", (), lambda s: s + 1),  # erasediff, scissorhands
    ("meta", (), lambda s: s + 7919), ("meta-forget-data", (), lambda s: s + 100),
    ("meta-related-data", (), lambda s: s + 101), ("meta-unrelated-data", (), lambda s: s + 102),
    ("gradients", (4,), lambda s: s * 1009 + 4), ("gradients-noise", (250, 1), lambda s: s * 7919 + 250 * 31 + 1),
]


@pytest.mark.parametrize("purpose,index,old", BEFORE, ids=[b[0] for b in BEFORE])
def test_every_purpose_keeps_its_old_seed(purpose, index, old):
    assert [seeds.of(s, purpose, *index) for s in (0, 1, 2, 17, 123456)] == [old(s) for s in (0, 1, 2, 17, 123456)]


def test_the_table_is_the_list_above_and_unknown_purposes_fail():
    assert set(seeds.DERIVATIONS) == {b[0] for b in BEFORE}
    with pytest.raises(ValueError, match="no seed purpose 'atack'; known: unlearn, attack"):
        seeds.of(0, "atack")
