"""`monkey-report --compare A B`: what differs between two runs, and by how much, on the same items.

Why: a merged report ranks variants on whatever images each holds, so a variant scored on one image
sits beside one scored on four without a word, and nothing says which config keys changed between
two runs. Here the two sides are paired item by item: the difference B - A of each metric is taken
per item both sides scored, and its 95 % interval is the project's cluster bootstrap
(monkey.eval.aggregate.cluster_bootstrap_interval), resampling subjects, since a subject's images
share a source photo. Items only one side holds are left out of the differences and named in a warning.

Pairing: when each side holds one variant (two run folders), those two are compared; otherwise
(experiment folders) variants are paired by their label, and labels found on one side only are listed.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monkey.eval.aggregate import cluster_bootstrap_interval, group_seed
from monkey.eval.collect import collect_scores, find_run_dirs, flatten, run_config
from monkey.eval.score_store import ORACLE, ScoreSet, comparable_settings
from monkey.eval.tables import fmt, markdown_table

from monkey.atomic import atomic_write_bytes
from monkey.errors import DataError

log = logging.getLogger(__name__)
ITEM_KEY = ["dataset", "item_id"]
DIFF_COLUMNS = [
    "variant_a",
    "variant_b",
    "dataset",
    "metric",
    "n",
    "subjects",
    "mean_a",
    "mean_b",
    "diff",
    "ci_low",
    "ci_high",
]


@dataclass
class Coverage:
    """Items (dataset, item_id) of one variant pair: on both sides, or on one only."""

    variant_a: str
    variant_b: str
    common: int
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)

    def warning(self) -> str | None:
        if not self.only_a and not self.only_b:
            return None
        first = (self.only_a or self.only_b)[0]
        return (
            f"{self.variant_a} vs {self.variant_b}: different items: {len(self.only_a)} only in A, "
            f"{len(self.only_b)} only in B (e.g. {first}); differences use the {self.common} items both hold"
        )


@dataclass
class Comparison:
    differences: pd.DataFrame  # DIFF_COLUMNS
    config_diff: pd.DataFrame  # variant_a, variant_b, key, a, b
    coverage: list[Coverage]
    unpaired: list[str]  # variant labels found on one side only
    warnings: list[str]


def generated(scores: pd.DataFrame) -> pd.DataFrame:
    return scores[scores["method"] != ORACLE] if not scores.empty else scores


def variant_pairs(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list[tuple[str, str]], list[str]]:
    """Which variant of A is compared with which of B, and the labels left unpaired."""
    va, vb = sorted(a["variant"].unique()), sorted(b["variant"].unique())
    if len(va) == 1 and len(vb) == 1:
        return [(va[0], vb[0])], []
    common = [v for v in va if v in vb]
    return [(v, v) for v in common], [f"A: {v}" for v in va if v not in vb] + [f"B: {v}" for v in vb if v not in va]


def item_coverage(a: pd.DataFrame, b: pd.DataFrame, variant_a: str, variant_b: str) -> Coverage:
    keys_a = set(map(tuple, a[ITEM_KEY].to_numpy().tolist()))
    keys_b = set(map(tuple, b[ITEM_KEY].to_numpy().tolist()))
    return Coverage(  # an item id starts with its dataset's name
        variant_a,
        variant_b,
        len(keys_a & keys_b),
        sorted(k[1] for k in keys_a - keys_b),
        sorted(k[1] for k in keys_b - keys_a),
    )


def paired_differences(
    a: pd.DataFrame,
    b: pd.DataFrame,
    variant_a: str,
    variant_b: str,
    metrics: list[str],
    samples: int,
    seed: int,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """Per dataset x metric: mean of B - A over the items both scored, with a subject-cluster bootstrap interval."""
    merged = a.merge(b, on=ITEM_KEY, suffixes=("_a", "_b"))  # one row per common item
    rows = []
    for dataset, group in merged.groupby("dataset", sort=True):
        for metric in metrics:
            if f"{metric}_a" not in group or f"{metric}_b" not in group:
                continue
            valid = group[[f"{metric}_a", f"{metric}_b", "subject_a"]].dropna()
            if valid.empty:
                continue
            diffs = (valid[f"{metric}_b"] - valid[f"{metric}_a"]).to_numpy()  # [n]
            subjects = valid["subject_a"].to_numpy()  # [n], the clusters
            low, high = cluster_bootstrap_interval(
                diffs, subjects, samples, group_seed(seed, variant_a, variant_b, dataset, metric), confidence
            )
            rows.append(
                {
                    "variant_a": variant_a,
                    "variant_b": variant_b,
                    "dataset": dataset,
                    "metric": metric,
                    "n": len(diffs),
                    "subjects": len(set(subjects)),
                    "mean_a": float(valid[f"{metric}_a"].mean()),
                    "mean_b": float(valid[f"{metric}_b"].mean()),
                    "diff": float(diffs.mean()),
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return rows


def config_differences(config_a: dict[str, Any] | None, config_b: dict[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(key, A's value, B's value) for every flattened config key whose values differ (absent: None)."""
    flat_a, flat_b = flatten(config_a or {}), flatten(config_b or {})
    out = []
    for key in sorted(set(flat_a) | set(flat_b)):
        value_a, value_b = flat_a.get(key), flat_b.get(key)
        if value_a != value_b:
            out.append((key.removeprefix("cfg."), value_a, value_b))
    return out


def check_same_score_set(run_dirs: list[Path], eval_name: str) -> None:
    """Both sides must hold score set `eval_name`, made with the same backbones, or the numbers do not compare."""
    settings = {}
    for run_dir in run_dirs:
        stored = ScoreSet(run_dir, eval_name).settings()
        if stored is None:
            raise DataError(f"{run_dir} has no scores/{eval_name}: run `monkey-report {run_dir}` (it scores) first")
        settings[run_dir] = comparable_settings(stored)
    first = next(iter(settings.values()))
    for run_dir, value in settings.items():
        if value != first:
            raise DataError(
                f"scores/{eval_name} of {run_dir} was made with other settings than {run_dirs[0]}'s: "
                "the two cannot be compared (score both with one eval config, e.g. --eval NAME)"
            )


def compare_runs(
    path_a: str | Path,
    path_b: str | Path,
    eval_name: str,
    metrics: list[str],
    samples: int,
    seed: int,
    confidence: float,
) -> Comparison:
    """Compare the run (or experiment) folders `path_a` and `path_b` on score set `eval_name`."""
    dirs_a, dirs_b = find_run_dirs([path_a]), find_run_dirs([path_b])
    for path, dirs in ((path_a, dirs_a), (path_b, dirs_b)):
        if not dirs:
            raise DataError(f"--compare: {path} holds no run folder (a folder with manifest/)")
    check_same_score_set(dirs_a + dirs_b, eval_name)
    a, b = generated(collect_scores(dirs_a, eval_name)), generated(collect_scores(dirs_b, eval_name))
    for path, side in ((path_a, a), (path_b, b)):
        if side.empty:
            raise DataError(f"--compare: {path} has no scored image in scores/{eval_name}")
    pairs, unpaired = variant_pairs(a, b)
    if not pairs:
        raise DataError(f"--compare: no variant label in both {path_a} and {path_b} ({'; '.join(unpaired)})")
    rows, diffs, coverage = [], [], []
    for variant_a, variant_b in pairs:
        side_a, side_b = a[a["variant"] == variant_a], b[b["variant"] == variant_b]
        coverage.append(item_coverage(side_a, side_b, variant_a, variant_b))
        present = [m for m in metrics if m in side_a and m in side_b]
        rows += paired_differences(side_a, side_b, variant_a, variant_b, present, samples, seed, confidence)
        config_a, config_b = run_config(Path(side_a["run_dir"].iloc[0])), run_config(Path(side_b["run_dir"].iloc[0]))
        diffs += [(variant_a, variant_b, *d) for d in config_differences(config_a, config_b)]
    warnings = [w for c in coverage if (w := c.warning())]
    if unpaired:
        warnings.append(f"variants on one side only, not compared: {'; '.join(unpaired)}")
    return Comparison(
        pd.DataFrame(rows, columns=DIFF_COLUMNS),
        pd.DataFrame(diffs, columns=["variant_a", "variant_b", "key", "a", "b"]),
        coverage,
        unpaired,
        warnings,
    )


def comparison_markdown(comparison: Comparison, path_a: str, path_b: str) -> str:
    lines = [f"# Compare\n\nA: `{path_a}`\nB: `{path_b}`\n"]
    lines += [f"**Warning:** {w}\n" for w in comparison.warnings]
    lines.append("## Config keys that differ\n")
    if comparison.config_diff.empty:
        lines.append("None (or no saved config in the folders).\n")
    else:
        rows = [
            [r.variant_a, r.variant_b, f"`{r.key}`", str(r.a), str(r.b)] for r in comparison.config_diff.itertuples()
        ]
        lines.append(markdown_table(["A", "B", "key", "A's value", "B's value"], rows))
    lines.append("## B - A on the items both scored (mean, 95 % interval resampling subjects)\n")
    rows = [
        [
            r.variant_a,
            r.variant_b,
            r.dataset,
            r.metric,
            str(r.n),
            fmt(r.mean_a),
            fmt(r.mean_b),
            f"{r.diff:+.3f}",
            "n/a" if np.isnan(r.ci_low) else f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]",
        ]
        for r in comparison.differences.itertuples()
    ]
    lines.append(markdown_table(["A", "B", "dataset", "metric", "items", "A", "B", "B - A", "interval"], rows))
    return "\n".join(lines)


def write_comparison(comparison: Comparison, out_dir: Path, path_a: str, path_b: str) -> Path:
    """compare.csv (differences), config_diff.csv and compare.md in `out_dir`; returns compare.md."""
    out_dir = Path(out_dir)
    atomic_write_bytes(
        out_dir / "compare.csv", comparison.differences.to_csv(index=False, float_format="%.6g").encode()
    )
    atomic_write_bytes(out_dir / "config_diff.csv", comparison.config_diff.to_csv(index=False).encode())
    path = out_dir / "compare.md"
    atomic_write_bytes(path, comparison_markdown(comparison, path_a, path_b).encode("utf-8"))
    return path


def coverage_warnings(scores: pd.DataFrame) -> list[str]:
    """For a merged report: per dataset, variants that hold different numbers of images, which Table 1
    would otherwise rank side by side without a word."""
    out = []
    for dataset, group in generated(scores).groupby("dataset", sort=True):
        counts = group.groupby("variant").size()
        if counts.nunique() > 1:
            listed = ", ".join(f"{v}: {n}" for v, n in counts.sort_values().items())
            out.append(f"{dataset}: variants cover different numbers of images ({listed}); `--compare` pairs them")
    return out
