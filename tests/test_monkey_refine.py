"""main_seg.py's seg_mask rules (monkey.adapter.refine): hand-made masks with known answers, and random
masks against a re-implementation written with numpy set operations instead of float products."""

import numpy as np
import pytest
import torch

from monkey.adapter.mask_sources import RefineSettings
from monkey.adapter.refine import RefineRule, refine_mask
from monkey.errors import ConfigError

ATTENTION = torch.zeros(8, 8)
ATTENTION[:, :4] = 1.0  # the left half


def box(rows: slice, cols: slice) -> torch.Tensor:
    segment = torch.zeros(8, 8, dtype=torch.bool)
    segment[rows, cols] = True
    return segment


INSIDE = box(slice(0, 2), slice(0, 2))  # 4 cells, all inside
EIGHTY = box(slice(2, 3), slice(0, 5))  # 5 cells, 4 inside: exactly 0.8
SEVENTY_FIVE = box(slice(3, 4), slice(1, 5))  # 4 cells, 3 inside
OUTSIDE = box(slice(0, 8), slice(6, 8))  # none inside


def test_overlap_takes_whole_segments_at_least_overlap_frac_inside():
    refined = refine_mask(ATTENTION, [INSIDE, EIGHTY, SEVENTY_FIVE, OUTSIDE], RefineRule("overlap", 0.8))
    assert torch.equal(refined.mask.bool(), INSIDE | EIGHTY)  # >= keeps the 0.8 segment, cell (2, 4) too
    assert (refined.segments, refined.kept) == (4, 2)
    looser = refine_mask(ATTENTION, [SEVENTY_FIVE], RefineRule("overlap", 0.75))
    assert torch.equal(looser.mask.bool(), SEVENTY_FIVE)
    assert not refine_mask(ATTENTION, [], RefineRule("overlap")).mask.any()  # no segment: empty


def test_exclusive_as_written_multiplies_every_segment_in():
    product = RefineRule("exclusive", paper_bug_exclusive_product=True)
    assert not refine_mask(ATTENTION, [INSIDE, EIGHTY], product).mask.any()  # disjoint segments: empty
    nested = box(slice(0, 4), slice(0, 8))  # holds INSIDE
    assert torch.equal(refine_mask(ATTENTION, [nested, INSIDE], product).mask.bool(), INSIDE)
    assert torch.equal(refine_mask(ATTENTION, [nested], product).mask.bool(), nested & ATTENTION.bool())
    assert refine_mask(ATTENTION, [], product).mask.all()  # no segment: the full mask, attention ignored


def test_exclusive_by_default_keeps_the_attention_mask_inside_the_segments():
    rule = RefineRule("exclusive")
    refined = refine_mask(ATTENTION, [INSIDE, EIGHTY, OUTSIDE], rule)
    assert torch.equal(refined.mask.bool(), (INSIDE | EIGHTY) & ATTENTION.bool())
    assert not refine_mask(ATTENTION, [], rule).mask.any()


def reference(attention: np.ndarray, segments: list[np.ndarray], rule: str, frac: float, product: bool):
    """The rules as set operations on bool arrays."""
    if rule == "overlap":
        chosen = [s for s in segments if np.count_nonzero(s & attention) >= frac * np.count_nonzero(s)]
        return np.logical_or.reduce(chosen) if chosen else np.zeros_like(attention)
    if product:
        return attention & np.logical_and.reduce(segments) if segments else np.ones_like(attention)
    return attention & np.logical_or.reduce(segments) if segments else np.zeros_like(attention)


@pytest.mark.parametrize("seed", range(6))
def test_rules_match_a_set_reimplementation_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    attention = rng.random((12, 10)) < 0.5
    # SAM-like: blobs of a coarse grid upsampled, some nested in others
    segments = [np.kron(rng.random((3, 5)) < 0.4, np.ones((4, 2), dtype=bool)) for _ in range(int(rng.integers(0, 5)))]
    segments += [s & (rng.random(s.shape) < 0.9) for s in segments[:1]]
    for rule, frac, product in [
        ("overlap", 0.8, False),
        ("overlap", 0.3, False),
        ("exclusive", 0.8, False),
        ("exclusive", 0.8, True),
    ]:
        got = refine_mask(torch.from_numpy(attention).float(), [torch.from_numpy(s) for s in segments],
                          RefineRule(rule, frac, product)).mask  # fmt: skip
        assert set(got.unique().tolist()) <= {0.0, 1.0}
        assert np.array_equal(got.numpy().astype(bool), reference(attention, segments, rule, frac, product)), (
            seed,
            rule,
            frac,
            product,
        )


def test_refine_block_errors_name_the_key():
    auto = {"_target_": "monkey.adapter.auto_masks.SamAutoMasker"}
    with pytest.raises(ConfigError, match=r"method.refine.rule='union'.*overlap"):
        RefineSettings.from_config({"rule": "union", "auto_masks": auto})
    with pytest.raises(ConfigError, match=r"method.refine.overlap_frac=1.5"):
        RefineSettings.from_config({"overlap_frac": 1.5, "auto_masks": auto})
    with pytest.raises(ConfigError, match=r"unknown key.*allowed: \['rule', 'overlap_frac', 'auto_masks'\]"):
        RefineSettings.from_config({"frac": 0.5, "auto_masks": auto})
    with pytest.raises(ConfigError, match=r"method.refine.auto_masks=None must be a config with a _target_"):
        RefineSettings.from_config({"rule": "overlap"})
    assert RefineSettings.from_config({"auto_masks": auto}, True).rule.paper_bug_exclusive_product
