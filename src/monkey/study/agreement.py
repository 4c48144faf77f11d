"""How far each automatic metric agrees with people.

Two sources of human judgment:

1. This harness's own user study (`monkey-study build` / `tally`). A study question shows one item made
   by every compared method; the participant picks the best image. A metric "picks" the method whose
   image scores highest on it (a tie of k methods counts 1/k if the participant chose one of them).
   Per metric: the share of answers where the metric's pick is the participant's, with a percentile
   bootstrap interval over participants; the chance level (1 / methods shown); and Kendall's tau between
   the methods' win rates and the metric's means over the study's items.

2. DreamBench++'s released human ratings (yuangpeng/dreambench_plus at 66ca27e,
   `data_human_rating/raw_data/<group>/*-<method>.json`, each `{"<collection_id>-<prompt_index>":
   [concept, prompt]}`), merged per method as its `merge_data.py` (`merge_data_human_rating`, lines
   29-56) does. Per metric and method: Krippendorff's alpha (interval) between one human group's
   ratings and the metric's values over the union of keys (missing = NaN), averaged over the groups,
   as its `krippendorff_analysis.py` computes it for GPT-4o (`kd_alpha`, lines 12-28; the group
   average, lines 86-87 and 109-110); human-human alpha beside it. Concept metrics are compared with
   the concept ratings, prompt metrics with the prompt ratings. Alpha (interval) is not scale-free: a
   cosine in [0, 1] against ratings on 0-4 scores low even when it ranks perfectly, so
   `alpha_rescaled` also gives each metric linearly mapped onto 0-4 by its own min and max.

Combined scores: the harmonic mean of an identity and a text metric per image, 2ab / (a + b).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from monkey.errors import DataError
from monkey.study import stats

COMBINED = {  # name -> (identity metric, text metric)
    "hm_dino_clip_t": ("dino", "clip_t"),
    "hm_clip_i_clip_t": ("clip_i", "clip_t"),
    "hm_judge": ("judge_concept", "judge_prompt"),
}
PROMPT_METRIC_WORDS = ("clip_t", "prompt")  # a metric naming one of these measures prompt following
HUMAN_SCALE = (0.0, 4.0)


def with_combined(scores: pd.DataFrame) -> pd.DataFrame:
    """`scores` plus each combined column whose two parts are there."""
    out = scores.copy()
    for name, (a, b) in COMBINED.items():
        if a in out and b in out:
            x, y = out[a].astype(float), out[b].astype(float)
            out[name] = (2 * x * y / (x + y)).where((x + y) != 0, 0.0)
    return out


def metric_pick_matches(answers: pd.DataFrame, scores: pd.DataFrame, metric: str) -> pd.Series:
    """Per answer: 1/k if the participant chose one of the k methods tied best on `metric` for that
    question's item, else 0; NaN where the item lacks that metric for a method shown."""
    table = scores.pivot_table(index="item_id", columns="label", values=metric, aggfunc="first")
    out = []
    for item_id, chosen in zip(answers["item_id"], answers["chosen"], strict=True):
        if item_id not in table.index:
            out.append(np.nan)
            continue
        row = table.loc[item_id]
        if row.isna().any():
            out.append(np.nan)
            continue
        best = set(row.index[row == row.max()])
        out.append(1.0 / len(best) if chosen in best else 0.0)
    return pd.Series(out, index=answers.index, dtype=float)


def agreement_with_study(
    answers: pd.DataFrame,
    scores: pd.DataFrame,
    metrics: list[str],
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per metric: agreement with the participants' picks and its bootstrap interval over
    participants, chance level, Kendall's tau of win rates against metric means.

    `answers`: participant, item_id, chosen (a method label); `scores`: label, item_id, metric columns."""
    labels = sorted(scores["label"].unique())
    win = answers["chosen"].value_counts(normalize=True).reindex(labels, fill_value=0.0)
    study_items = scores[scores["item_id"].isin(set(answers["item_id"]))]
    rows = []
    for metric in metrics:
        if metric not in scores or scores[metric].isna().all():
            continue
        matches = metric_pick_matches(answers, scores, metric)
        valid = answers.assign(match=matches).dropna(subset=["match"])
        per = valid.groupby("participant")["match"].agg(["sum", "count"])
        agreement = float(per["sum"].sum() / per["count"].sum()) if len(per) else math.nan
        low, high = stats.interval(
            (per["sum"].to_numpy(), per["count"].to_numpy()),
            lambda s, n, axis=-1: s.sum(axis=axis) / n.sum(axis=axis),
            resamples,
            seed,
            confidence,
        )
        means = study_items.groupby("label")[metric].mean().reindex(labels)
        tau, p = kendalltau(win.to_numpy(), means.to_numpy()) if means.notna().all() else (math.nan, math.nan)
        rows.append(
            {
                "metric": metric,
                "answers": int(per["count"].sum()),
                "participants": len(per),
                "agreement": agreement,
                "ci_low": low,
                "ci_high": high,
                "chance": 1.0 / len(labels),
                "kendall_tau": float(tau),
                "tau_p": float(p),
            }
        )
    return pd.DataFrame(rows).sort_values("agreement", ascending=False, ignore_index=True)


# ---- DreamBench++'s human ratings -------------------------------------------------------------------
def read_dreambench_human(raw_dir: Path, method: str) -> dict[str, dict[str, dict[str, float]]]:
    """group -> {"cp": {key: rating}, "pf": {key: rating}} for `method`, from raw_dir/<group>/*-<method>.json."""
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: not a folder (DreamBench++'s data_human_rating/raw_data)")
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for group in sorted(p for p in raw_dir.iterdir() if p.is_dir()):
        merged: dict[str, dict[str, float]] = {"cp": {}, "pf": {}}
        for path in sorted(group.glob(f"*-{method}.json")):
            try:
                data = json.loads(path.read_text())
                for key, pair in data.items():
                    merged["cp"][str(key)], merged["pf"][str(key)] = float(pair[0]), float(pair[1])
            except (ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
                raise DataError(f"{path}: not DreamBench++ human ratings ({{key: [concept, prompt]}}): {err}") from err
        if merged["cp"]:
            groups[group.name] = merged
    return groups


def interval_alpha(a: dict[str, float], b: dict[str, float]) -> float:
    """Krippendorff's alpha (interval) of two raters over the union of their keys, missing as NaN."""
    keys = sorted(set(a) | set(b))
    data = [[a.get(k, np.nan) for k in keys], [b.get(k, np.nan) for k in keys]]
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="interval"))


def rescaled(values: dict[str, float]) -> dict[str, float]:
    """Linearly onto the human scale by the values' own min and max."""
    low, high = min(values.values()), max(values.values())
    span = (high - low) or 1.0
    return {k: HUMAN_SCALE[0] + (v - low) * (HUMAN_SCALE[1] - HUMAN_SCALE[0]) / span for k, v in values.items()}


def aspect_of(metric: str) -> str:
    return "pf" if any(word in metric for word in PROMPT_METRIC_WORDS) else "cp"


def agreement_with_dreambench(raw_dir: Path, ours: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per (metric, method) and a mean row per metric. `ours`: method (DreamBench++'s method name,
    as in its files), key (`<collection_id>-<prompt_index>`), metric columns."""
    rows = []
    for method, frame in ours.groupby("method"):
        humans = read_dreambench_human(raw_dir, str(method))
        if not humans:
            raise DataError(f"{raw_dir}: no */*-{method}.json (DreamBench++ human ratings) for method {method!r}")
        names = list(humans)
        for metric in metrics:
            if metric not in frame:
                continue
            values = {str(k): float(v) for k, v in zip(frame["key"], frame[metric], strict=True) if pd.notna(v)}
            aspect = aspect_of(metric)
            per_group = [interval_alpha(humans[g][aspect], values) for g in names]
            per_group_rescaled = [interval_alpha(humans[g][aspect], rescaled(values)) for g in names]
            human_human = (
                interval_alpha(humans[names[0]][aspect], humans[names[1]][aspect]) if len(names) > 1 else math.nan
            )
            rows.append(
                {
                    "metric": metric,
                    "method": method,
                    "aspect": {"cp": "concept", "pf": "prompt"}[aspect],
                    "alpha": float(np.mean(per_group)),
                    "alpha_rescaled": float(np.mean(per_group_rescaled)),
                    "human_human": human_human,
                    "groups": len(names),
                    "images": len(values),
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    means = table.groupby(["metric", "aspect"], as_index=False)[["alpha", "alpha_rescaled", "human_human"]].mean()
    means["method"] = "mean"
    return pd.concat([table, means], ignore_index=True)


# ---- a study folder ---------------------------------------------------------------------------------
def study_scores(definition: dict, eval_name: str, runs: list[Path] | None = None) -> pd.DataFrame:
    """The score rows of the study's methods (label, item_id, metrics), read from the run folders the study
    was built from, or found by folder name among `runs` (folders that moved since)."""
    from monkey.eval.collect import find_run_dirs
    from monkey.eval.score_store import ScoreSet

    moved = {path.name: path for path in find_run_dirs(runs)} if runs else {}
    frames = []
    for entry in definition["methods"]:
        run_dir = Path(entry["run_dir"])
        run_dir = moved.get(run_dir.name, run_dir)
        frame = ScoreSet(run_dir, eval_name).frame()
        if frame.empty:
            raise DataError(f"{run_dir}: no scores/{eval_name} (run the evaluate stage, or name the moved run folders)")
        frames.append(frame[frame["method"] == entry["method"]].assign(label=entry["label"]))
    return with_combined(pd.concat(frames, ignore_index=True))


def score_metrics(scores: pd.DataFrame) -> list[str]:
    """The per-image metrics a frame holds: scores of the generated image against its source or prompt
    (not the `_all` and `_paper` variants), the judge's, the masked ones, and the combined ones; not the
    masked metrics' sizes (`subject_area`, not a quality; `mask_iou`, MONKEY rows only)."""
    from monkey.eval.masked_columns import MASK_IOU, SUBJECT_AREA

    bookkeeping = {"created", "seed", "seed_index", "prompt_index", "n_refs", "live", SUBJECT_AREA, MASK_IOU}
    numeric = [c for c in scores.columns if pd.api.types.is_float_dtype(scores[c]) and c not in bookkeeping]
    return [c for c in numeric if not c.endswith(("_all", "_paper"))]


def agreement_markdown(study: pd.DataFrame, dreambench: pd.DataFrame | None) -> str:
    lines = ["# Which metric agrees with people", ""]
    if len(study):
        lines += [
            "## This study: the metric's pick against the participant's",
            "",
            "Share of answers whose chosen image is the one the metric scores highest (ties: 1/k); interval: "
            "percentile bootstrap over participants. Kendall's tau: methods' win rates against the metric's means.",
            "",
            "| metric | agreement | interval | chance | Kendall's tau | answers |",
            "|---|---|---|---|---|---|",
        ]
        for r in study.itertuples():
            lines.append(
                f"| {r.metric} | {r.agreement:.3f} | [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.chance:.3f} | "
                f"{r.kendall_tau:.3f} | {r.answers} |"
            )
    if dreambench is not None and len(dreambench):
        means = dreambench[dreambench["method"] == "mean"].sort_values("alpha", ascending=False)
        lines += [
            "",
            "## DreamBench++'s human ratings: Krippendorff's alpha (interval), mean over methods",
            "",
            "| metric | rating | alpha | alpha (metric rescaled to 0-4) | human-human |",
            "|---|---|---|---|---|",
        ]
        for r in means.itertuples():
            lines.append(f"| {r.metric} | {r.aspect} | {r.alpha:.3f} | {r.alpha_rescaled:.3f} | {r.human_human:.3f} |")
    return "\n".join(lines) + "\n"
