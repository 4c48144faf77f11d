"""Per variant x dataset x metric: mean, std, a seeded 95 % bootstrap interval and n.

Two levels: `image` averages over generated images (the paper's Table 1); `subject` first averages
each subject's images, then over subjects, so a subject with many images does not dominate.

Intervals resample **subjects** at both levels (a cluster bootstrap): the 20 images of one subject
share its source photo and are not independent, so resampling images would make intervals too narrow
(on DreamBooth, MONKEY's DINO: 0.035 wide resampling images, 0.059 resampling subjects). At the image
level a resample draws subjects with replacement and averages all images of the drawn subjects.
"""

import numpy as np
import pandas as pd
from monkey.eval.judge import JUDGE_COLUMNS
from monkey.eval.masked_columns import masked_metric_columns

from monkey.hashing import stable_hash

LEVELS = ("image", "subject")
SUMMARY_COLUMNS = [
    "variant",
    "method",
    "preset",
    "dataset",
    "metric",
    "level",
    "n",
    "subjects",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "resampled",
]
RESAMPLED = "subjects"  # what the bootstrap draws with replacement, at every level


def bootstrap_interval(
    values: np.ndarray, samples: int, seed: int | list[int], confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean: resample `values` with replacement `samples` times."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    if len(values) == 1:
        return (float(values[0]), float(values[0]))
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    step = max(1, 2_000_000 // len(values))  # bounded memory for large n
    for start in range(0, samples, step):
        count = min(step, samples - start)
        means[start : start + count] = values[rng.integers(0, len(values), size=(count, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def cluster_bootstrap_interval(
    values: np.ndarray, clusters: np.ndarray, samples: int, seed: int | list[int], confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean over all values, resampling whole clusters (subjects) with
    replacement: each resample is sum(values of the drawn clusters) / count(values of the drawn clusters).
    NaN with fewer than two clusters (nothing to resample)."""
    values = np.asarray(values, dtype=float)
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    k = int(inverse.max()) + 1 if len(values) else 0
    if k < 2:
        return (float("nan"), float("nan"))
    sums = np.bincount(inverse, weights=values, minlength=k)  # [k]
    counts = np.bincount(inverse, minlength=k).astype(float)  # [k]
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    step = max(1, 2_000_000 // k)  # bounded memory for many subjects
    for start in range(0, samples, step):
        count = min(step, samples - start)
        drawn = rng.integers(0, k, size=(count, k))  # [count, k] cluster indices
        means[start : start + count] = sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def group_preset(group: pd.DataFrame) -> str:
    """The preset a variant's images were made under (`cfg.preset`; `fair` for folders without it)."""
    if "cfg.preset" in group and group["cfg.preset"].notna().any():
        return str(group["cfg.preset"].dropna().iloc[0])
    return "fair"


def group_seed(seed: int, *parts: str) -> list[int]:
    """A seed per group, so adding a method never moves another method's interval."""
    return [seed, int(stable_hash(list(parts), 8), 16)]


def summarize(
    scores: pd.DataFrame, metrics: list[str], samples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> pd.DataFrame:
    """Long table: one row per (variant, dataset, metric, level); NaN scores (n/a) are left out.
    Intervals resample subjects at both levels (see the module docstring)."""
    rows = []
    for (variant, dataset), group in scores.groupby(["variant", "dataset"], sort=True):
        method = group["method"].iloc[0]
        preset = group_preset(group)
        for metric in metrics:
            if metric not in group:
                continue
            valid = group[["subject", metric]].dropna()
            images, subjects = valid[metric].to_numpy(), valid["subject"].to_numpy()
            subject_means = valid.groupby("subject")[metric].mean().to_numpy()
            for level, values in (("image", images), ("subject", subject_means)):
                level_seed = group_seed(seed, variant, dataset, metric, level)
                if level == "image":
                    low, high = cluster_bootstrap_interval(values, subjects, samples, level_seed, confidence)
                else:  # one value per subject: resampling values is resampling subjects
                    low, high = bootstrap_interval(values, samples, level_seed, confidence)
                    if len(values) < 2:
                        low, high = float("nan"), float("nan")
                n = len(values)
                rows.append(
                    {
                        "variant": variant,
                        "method": method,
                        "preset": preset,
                        "dataset": dataset,
                        "metric": metric,
                        "level": level,
                        "n": n,
                        "subjects": len(subject_means),
                        "mean": float(np.mean(values)) if n else float("nan"),
                        "std": float(np.std(values, ddof=1)) if n > 1 else float("nan"),
                        "ci_low": low,
                        "ci_high": high,
                        "resampled": RESAMPLED,
                    }
                )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def metric_columns(scores: pd.DataFrame, backbones: dict[str, list[str | None]]) -> list[str]:
    """Every score column the backbones filled, in backbone order (m, m_all, then text)."""
    columns = []
    for image_metric, text_metric in backbones.values():
        columns += [image_metric, f"{image_metric}_all"]
        if text_metric:
            columns += [text_metric, f"{text_metric}_paper"]
    columns += list(JUDGE_COLUMNS)  # eval.judge's ratings, where a judge rated the images
    columns += masked_metric_columns(backbones)  # eval.masked's columns, where they were computed
    return [c for c in columns if c in scores]
