"""Per variant x dataset x metric: mean, std, a seeded 95 % bootstrap interval and n.

Two levels: `image` averages over generated images (the paper's Table 1); `subject` first averages
each subject's images, then over subjects, so a subject with many images does not dominate.
"""

import numpy as np
import pandas as pd

from monkey.hashing import stable_hash

LEVELS = ("image", "subject")
SUMMARY_COLUMNS = ["variant", "method", "dataset", "metric", "level", "n", "mean", "std", "ci_low", "ci_high"]


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


def group_seed(seed: int, *parts: str) -> list[int]:
    """A seed per group, so adding a method never moves another method's interval."""
    return [seed, int(stable_hash(list(parts), 8), 16)]


def summarize(
    scores: pd.DataFrame, metrics: list[str], samples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> pd.DataFrame:
    """Long table: one row per (variant, dataset, metric, level); NaN scores (n/a) are left out."""
    rows = []
    for (variant, dataset), group in scores.groupby(["variant", "dataset"], sort=True):
        method = group["method"].iloc[0]
        for metric in metrics:
            if metric not in group:
                continue
            valid = group[["subject", metric]].dropna()
            per_level = {
                "image": valid[metric].to_numpy(),
                "subject": valid.groupby("subject")[metric].mean().to_numpy(),
            }
            for level, values in per_level.items():
                n = len(values)
                low, high = bootstrap_interval(
                    values, samples, group_seed(seed, variant, dataset, metric, level), confidence
                )
                rows.append(
                    {
                        "variant": variant,
                        "method": method,
                        "dataset": dataset,
                        "metric": metric,
                        "level": level,
                        "n": n,
                        "mean": float(np.mean(values)) if n else float("nan"),
                        "std": float(np.std(values, ddof=1)) if n > 1 else float("nan"),
                        "ci_low": low,
                        "ci_high": high,
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
    return [c for c in columns if c in scores]
