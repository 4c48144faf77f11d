"""Aggregation, frontiers and the fair/paper pairing against computations written out here (a brute-force
frontier, a hand bootstrap loop, hand means).

Light on purpose (numpy, pandas and monkey.eval's pure modules, no model): the mutation run
(benchmarks/mutation.py) runs this file once per mutant, with `--noconftest`. Planted bugs each test
was seen to catch (then reverted):
- the last Pareto-frontier member dropped in `pareto_membership`          -> test_frontier_marks...
- subject-level aggregation with the median of a subject's images           -> test_subject_level_is_the_mean...
- intervals resampling images instead of subjects                           -> test_image_level_interval...
"""

import numpy as np
import pandas as pd
import pytest
from monkey.eval.aggregate import cluster_bootstrap_interval, summarize
from monkey.eval.tables import paper_comparison, pareto_membership, without_preset


def brute_frontier(points: dict[str, tuple[float, float]]) -> set[str]:
    """Sort by x falling; a point is on the frontier when its y beats every y seen before (distinct values)."""
    best, on = -np.inf, set()
    for name, (_, y) in sorted(points.items(), key=lambda kv: -kv[1][0]):
        if y > best:
            on.add(name)
            best = y
    return on


def test_frontier_marks_every_member_including_the_last():
    rng = np.random.default_rng(7)
    rows, expected = [], {}
    for dataset in ("dreambooth", "magic"):
        names = [f"m{i}" for i in range(8)] + ["zz_monkey"]  # MONKEY sorts last, as in the real table
        clip_t = rng.uniform(0.2, 0.35, len(names))
        clip_i = 1.2 - 2 * clip_t + rng.normal(0, 0.01, len(names))  # a trade-off: many frontier members
        clip_t[-1], clip_i[-1] = clip_t.max() + 0.01, clip_i.min() - 0.01  # the last is on it (best CLIP-T)
        for name, x, y in zip(names, clip_t, clip_i, strict=True):
            for metric, value in (("clip_t", x), ("clip_i", y)):
                rows.append(dict(variant=name, method=name, dataset=dataset, metric=metric, level="image", mean=value))
        on = brute_frontier({n: (x, y) for n, x, y in zip(names, clip_t, clip_i, strict=True)})
        assert len(on) >= 3 and "zz_monkey" in on
        label = {"dreambooth": "DreamBooth", "magic": "Magic"}[dataset]
        for name in on:
            expected.setdefault(name, []).append(f"{label} CLIP-I")
    membership = pareto_membership(pd.DataFrame(rows), [("clip_t", "clip_i")], [], {"clip_i": "CLIP-I"})
    assert membership == expected


def test_subject_level_is_the_mean_of_subject_means():
    scores = pd.DataFrame(
        {
            "variant": ["m"] * 5,
            "method": ["m"] * 5,
            "dataset": ["d"] * 5,
            "subject": ["a", "a", "a", "b", "b"],
            "dino": [0.1, 0.2, 0.6, 0.9, 0.7],  # a's median 0.2 != its mean 0.3
        }
    )
    summary = summarize(scores, ["dino"], samples=100, seed=0).set_index("level")
    assert summary.loc["subject", "mean"] == pytest.approx((0.3 + 0.8) / 2)
    assert summary.loc["image", "mean"] == pytest.approx(np.mean([0.1, 0.2, 0.6, 0.9, 0.7]))
    assert (summary["subjects"] == 2).all() and (summary["resampled"] == "subjects").all()


def test_image_level_interval_resamples_subjects():
    rng = np.random.default_rng(3)
    subjects = np.repeat(np.arange(12), 20)  # 12 subjects x 20 images, as DreamBooth's layout
    values = rng.normal(0.5, 0.1, 12)[subjects] + rng.normal(0, 0.03, len(subjects))  # subject effects
    low, high = cluster_bootstrap_interval(values, subjects, samples=300, seed=[5, 6])
    # written out: draw 12 subjects with replacement, average all images of the drawn subjects
    draw = np.random.default_rng([5, 6])
    means = []
    for _ in range(300):
        picked = draw.integers(0, 12, size=12)
        means.append(np.concatenate([values[subjects == s] for s in picked]).mean())
    assert (low, high) == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)))
    # resampling images as independent would be far narrower here
    iid = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(300)]
    assert high - low > 2 * (np.percentile(iid, 97.5) - np.percentile(iid, 2.5))
    scores = pd.DataFrame({"variant": "m", "method": "m", "dataset": "d", "subject": subjects, "dino": values})
    row = summarize(scores, ["dino"], samples=300, seed=0).set_index("level").loc["image"]
    assert row["ci_high"] - row["ci_low"] == pytest.approx(high - low, rel=0.35)
    assert np.isnan(cluster_bootstrap_interval(values[:20], subjects[:20], 100, 0)).all()  # one subject: n/a


def test_variants_pair_with_their_fair_twin():
    assert without_preset("monkey (preset=paper)") == "monkey"
    assert without_preset("monkey (method.token=2, preset=fair)") == "monkey (method.token=2)"
    assert without_preset("monkey (preset=paper, method.token=2)") == "monkey (method.token=2)"
    summary = pd.DataFrame(
        [
            dict(
                variant=v,
                method="monkey",
                preset=p,
                dataset="dreambooth",
                metric="dino_v1",
                level="image",
                n=4,
                subjects=2,
                mean=m,
                ci_low=m - 0.1,
                ci_high=m + 0.1,
            )
            for v, p, m in (("monkey (preset=paper)", "paper", 0.4), ("monkey (preset=fair)", "fair", 0.5))
        ]
    )
    paper = pd.DataFrame(
        {"method": ["MONKEY"], "dataset": ["dreambooth"], "clip_t": [0.3], "dino": [0.529], "clip_i": [0.7]}
    )
    comparison = paper_comparison(summary, paper, {"monkey": "MONKEY"}, {"dino_v1": "dino"})
    row = comparison.iloc[0]
    assert (row["variant"], row["fair_variant"]) == ("monkey (preset=paper)", "monkey (preset=fair)")
    assert row["diff"] == pytest.approx(0.4 - 0.529) and row["fair_minus_ours"] == pytest.approx(0.1)
