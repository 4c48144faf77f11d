"""Threshold rules and empty masks against hand-thresholded maps (the reference code keeps cells >= t).

Light on purpose (torch and masks.py only, no pipeline): the mutation run (benchmarks/mutation.py) runs
this file once per mutant. Planted bugs it was seen to catch (then reverted):
- union thresholding with `>=` under `threshold_rule=gt`, and with `>` under `ge` (masks.py)
- an empty mask passed on unflagged (masks.py, the `not mask.any()` check)
"""

import pytest
import torch

from monkey.adapter.masks import DegenerateMaskError, extract_mask, map_key
from monkey.adapter.settings import MonkeySettings
from monkey.errors import ConfigError

LAYER = "attn2"


def record_of(maps: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """A record whose token-1 maps at steps 1, 2, ... are `maps` (other tokens zero)."""
    record = {}
    for step, values in enumerate(maps, start=1):
        grid = torch.zeros(*values.shape, 4)
        grid[..., 1] = values
        record[map_key(LAYER, step)] = grid
    return record


@pytest.mark.parametrize("combine", ["mean", "union"])
def test_threshold_rules_keep_the_cells_the_reference_code_keeps_and_flag_empty_masks(combine):
    # already normalised (min 0, max 1), so both rules see exactly these values
    first = torch.tensor([[0.0, 0.5, 1.0], [0.25, 0.75, 0.5]])
    second = torch.tensor([[1.0, 0.0, 0.25], [0.5, 0.0, 0.0]])
    maps = [first] if combine == "mean" else [first, second]
    steps = [1] if combine == "mean" else [1, 2]

    def mask(rule: str, threshold: float, **knobs) -> torch.Tensor:
        config = MonkeySettings(
            layers=[LAYER], capture_steps=steps, combine=combine, threshold=threshold, threshold_rule=rule, **knobs
        )
        return extract_mask(record_of(maps), config)

    # by hand: a cell is kept when any step's normalised value passes (one step for mean)
    for rule, passes in (("gt", lambda v: v > 0.5), ("ge", lambda v: v >= 0.5)):
        expected = torch.zeros(2, 3)
        for values in maps:
            expected = torch.maximum(expected, passes(values).float())
        got = mask(rule, 0.5)
        assert torch.equal(got.mask, expected), rule
        assert not got.degenerate and got.info()["mask_area"] == pytest.approx(float(expected.mean()), abs=1e-6)
    # threshold 1: `ge` keeps the top cell(s) as the reference code does; `gt` keeps none -> flagged
    top = torch.zeros(2, 3)
    for values in maps:
        top = torch.maximum(top, (values == 1.0).float())
    assert torch.equal(mask("ge", 1.0).mask, top)
    empty = mask("gt", 1.0)
    assert empty.degenerate and empty.fallback == "full" and torch.equal(empty.mask, torch.ones(2, 3))
    assert empty.info()["mask_degenerate_reason"] == "empty"
    with pytest.raises(DegenerateMaskError, match=r"keeps no cell at threshold 1\.0"):
        mask("gt", 1.0, degenerate="error")
    with pytest.raises(ConfigError, match=r"method.threshold_rule='>='"):
        MonkeySettings(threshold_rule=">=")


def test_normalisation_union_map_and_constant_maps_by_hand():
    """Added after the mutation run (results/mutation/mutmut_masks.md): min-max normalisation, the union's
    combined map and the constant-map flag, each against values written out here."""
    raw = [torch.tensor([[0.2, 0.4, 0.6], [0.3, 0.5, 0.2]]), torch.tensor([[0.1, 0.1, 0.3], [0.5, 0.2, 0.1]])]
    config = MonkeySettings(layers=[LAYER], capture_steps=[1, 2], combine="union", threshold=0.5)
    got = extract_mask(record_of(raw), config)
    normalised = [(m - m.min()) / (m.max() - m.min()) for m in raw]
    torch.testing.assert_close(got.attention, torch.maximum(*normalised), atol=1e-6, rtol=0)
    assert torch.equal(got.mask, ((normalised[0] > 0.5) | (normalised[1] > 0.5)).float())
    constant = extract_mask(record_of([torch.full((2, 3), 0.3)]), MonkeySettings(layers=[LAYER], capture_steps=[1]))
    assert constant.degenerate and constant.info()["mask_degenerate_reason"] == "constant"
    tiny_span = torch.tensor([[0.3, 0.3 + 5e-7, 0.3], [0.3, 0.3, 0.3]])  # span below DEGENERATE_SPAN (1e-6)
    assert extract_mask(record_of([tiny_span]), MonkeySettings(layers=[LAYER], capture_steps=[1])).degenerate
