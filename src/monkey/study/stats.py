"""The statistics of a tally, each from a maintained library:

- win rates (share of a method's images chosen best) with percentile bootstrap intervals over
  participants: `scipy.stats.bootstrap` (paired resampling of each participant's wins and answers);
- Bradley-Terry scores: each answer is a choice of one image among the k shown, Luce's choice model
  (Bradley-Terry generalised from pairs to sets), fitted by `choix.ilsr_top1`; scores are log-strengths
  centred on 0, intervals by bootstrap over participants (`scipy.stats.bootstrap`, refitting);
- inter-rater agreement: `krippendorff.alpha`, nominal, raters = participants, units = study questions,
  value = the method chosen.
"""

import warnings

import choix
import krippendorff
import numpy as np
import pandas as pd
from scipy.stats import bootstrap

AGGREGATED = "aggregated"


def groups(choices: pd.DataFrame, datasets: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """Each dataset's answers, then all of them together."""
    return [(d, choices[choices["dataset"] == d]) for d in datasets] + [(AGGREGATED, choices)]


def interval(samples: tuple, statistic, resamples: int, seed: int, confidence: float) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over participants (paired samples, first axis);
    NaN with fewer than 2 participants."""
    if len(samples[0]) < 2:
        return np.nan, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate samples (every resample equal) give a point interval
        result = bootstrap(
            samples,
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def counts(choices: pd.DataFrame, methods: list[str], datasets: list[str]) -> pd.DataFrame:
    """Times each method's image was chosen: index dataset (+ aggregated), columns methods."""
    table = {
        name: group["chosen"].value_counts().reindex(methods, fill_value=0) for name, group in groups(choices, datasets)
    }
    return pd.DataFrame(table).T.astype(int).rename_axis("dataset")


def win_rates(
    choices: pd.DataFrame, methods: list[str], datasets: list[str], resamples: int, seed: int, confidence: float
) -> pd.DataFrame:
    rows = []
    for name, group in groups(choices, datasets):
        people = sorted(group["participant"].unique())
        answers = group.groupby("participant").size().reindex(people).to_numpy(float)
        for method in methods:
            wins = (group["chosen"] == method).groupby(group["participant"]).sum().reindex(people).to_numpy(float)

            def rate(w, n, axis=-1):
                return w.sum(axis=axis) / n.sum(axis=axis)

            low, high = interval((wins, answers), rate, resamples, seed, confidence)
            rows.append(
                {
                    "dataset": name,
                    "method": method,
                    "wins": int(wins.sum()),
                    "answers": int(answers.sum()),
                    "participants": len(people),
                    "win_rate": wins.sum() / answers.sum() if answers.sum() else np.nan,
                    "low": low,
                    "high": high,
                }
            )
    return pd.DataFrame(rows)


def luce_data(group: pd.DataFrame, methods: list[str]) -> list[tuple[int, tuple[int, ...]]]:
    """(winner, losers) per answer: every study question shows all methods."""
    index = {m: i for i, m in enumerate(methods)}
    return [(index[c], tuple(i for m, i in index.items() if m != c)) for c in group["chosen"]]


def luce_scores(data: list[tuple[int, tuple[int, ...]]], n_methods: int, alpha: float) -> np.ndarray:
    """choix's ILSR estimate of Luce/Bradley-Terry log-strengths, centred. [n_methods]"""
    params = choix.ilsr_top1(n_methods, data, alpha=alpha, max_iter=1000)
    return params - params.mean()


def bradley_terry(
    choices: pd.DataFrame,
    methods: list[str],
    datasets: list[str],
    resamples: int,
    seed: int,
    confidence: float,
    alpha: float,
) -> pd.DataFrame:
    """Luce/Bradley-Terry log-strength per method with bootstrap intervals over participants. `alpha`
    is choix's regularisation: it keeps a method that was never chosen at a finite score."""
    rows = []
    for name, group in groups(choices, datasets):
        people = sorted(group["participant"].unique())
        per_person = [luce_data(group[group["participant"] == p], methods) for p in people]
        scores = luce_scores([d for data in per_person for d in data], len(methods), alpha)

        def refit(picks, axis=-1, per_person=per_person):
            picks = np.atleast_2d(picks)  # [resamples, participants] of participant indices
            fits = [luce_scores([d for i in row for d in per_person[int(i)]], len(methods), alpha) for row in picks]
            return np.stack(fits, axis=-1)  # [n_methods, resamples]

        if len(people) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = bootstrap(
                    (np.arange(len(people)),),
                    refit,
                    vectorized=True,
                    n_resamples=resamples,
                    confidence_level=confidence,
                    method="percentile",
                    rng=np.random.default_rng(seed),
                )
            low, high = result.confidence_interval.low, result.confidence_interval.high
        else:
            low = high = np.full(len(methods), np.nan)
        for i, method in enumerate(methods):
            rows.append({"dataset": name, "method": method, "score": scores[i], "low": low[i], "high": high[i]})
    return pd.DataFrame(rows)


def agreement(choices: pd.DataFrame, methods: list[str], datasets: list[str]) -> pd.DataFrame:
    """Krippendorff's alpha (nominal) per dataset and over all study questions."""
    index = {m: float(i) for i, m in enumerate(methods)}
    rows = []
    for name, group in groups(choices, datasets):
        matrix = group.pivot_table(index="participant", columns="question", values="chosen", aggfunc="first")
        values = matrix.map(lambda v: index.get(v, np.nan)).to_numpy(float)  # [raters, units]
        alpha, note = np.nan, ""
        try:
            alpha = float(krippendorff.alpha(reliability_data=values, level_of_measurement="nominal"))
        except ValueError as err:  # e.g. one rater, or one value in all answers
            note = str(err)
        rows.append(
            {"dataset": name, "alpha": alpha, "raters": values.shape[0], "units": values.shape[1], "note": note}
        )
    return pd.DataFrame(rows)
