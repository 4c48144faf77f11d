"""How far each metric agrees with people (monkey.study.agreement): synthetic participants who choose by
one metric rank it first, random participants give chance; ties, Kendall's tau and Krippendorff's alpha
against hand computations; DreamBench++'s human-rating layout; the CLI over a built study.

Planted bugs each caught here: the metric's pick taken as the lowest score; ties counted as a full match;
the concept metric compared with the prompt ratings; the human groups not averaged (first group only);
the score rows of another method's label used for a study label."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monkey.eval.collect import find_run_dirs
from monkey.eval.score_store import ScoreSet
from study_helpers import make_experiment, response, write_json

from monkey.store import RunStore
from monkey.study import agreement as ag
from monkey.study.cli import main
from monkey.study.questions import method_runs
from monkey.study.site import StudySpec, build_study

LABELS = ["a", "b", "c"]


def synthetic_scores(items: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {"label": label, "item_id": f"i{i}", "m1": rng.random(), "m2": rng.random(), "m3": rng.random()}
        for i in range(items)
        for label in LABELS
    ]
    return pd.DataFrame(rows)


def answers_by(scores: pd.DataFrame, participants: int, choose) -> pd.DataFrame:
    rows = []
    for p in range(participants):
        for item_id, group in scores.groupby("item_id"):
            rows.append({"participant": f"p{p}", "item_id": item_id, "chosen": choose(p, group)})
    return pd.DataFrame(rows)


def test_participants_who_choose_by_a_metric_rank_it_first_and_random_ones_give_chance():
    scores = synthetic_scores(items=40, seed=1)
    by_m2 = answers_by(scores, 10, lambda p, g: g.loc[g["m2"].idxmax(), "label"])
    table = ag.agreement_with_study(by_m2, scores, ["m1", "m2", "m3"], resamples=200).set_index("metric")
    assert table.index[0] == "m2" and table.loc["m2", "agreement"] == 1.0
    assert table.loc[["m1", "m3"], "agreement"].lt(0.7).all()
    rng = np.random.default_rng(5)
    random = answers_by(scores, 30, lambda p, g: LABELS[rng.integers(3)])
    table = ag.agreement_with_study(random, scores, ["m1", "m2", "m3"], resamples=400).set_index("metric")
    assert (table["chance"] == 1 / 3).all()
    assert (table["agreement"] - 1 / 3).abs().lt(0.08).all()
    assert ((table["ci_low"] < 1 / 3) & (table["ci_high"] > 1 / 3)).sum() >= 2  # chance inside, but for bad luck


def test_a_tie_counts_one_over_k_and_tau_follows_the_win_rates():
    scores = pd.DataFrame(
        [
            {"label": "a", "item_id": "x", "m": 0.9},
            {"label": "b", "item_id": "x", "m": 0.9},  # a and b tie on x
            {"label": "c", "item_id": "x", "m": 0.1},
            {"label": "a", "item_id": "y", "m": 0.8},
            {"label": "b", "item_id": "y", "m": 0.5},
            {"label": "c", "item_id": "y", "m": 0.2},
        ]
    )
    answers = pd.DataFrame(
        [
            {"participant": "p", "item_id": "x", "chosen": "a"},  # one of two tied best: 1/2
            {"participant": "p", "item_id": "y", "chosen": "a"},  # the best: 1
            {"participant": "q", "item_id": "x", "chosen": "c"},  # 0
            {"participant": "q", "item_id": "y", "chosen": "b"},  # 0
        ]
    )
    row = ag.agreement_with_study(answers, scores, ["m"], resamples=50).iloc[0]
    assert row["agreement"] == pytest.approx(1.5 / 4)
    # win rates a 2/4, b 1/4, c 1/4; metric means a 0.85, b 0.7, c 0.15: concordant pairs (a,b), (a,c); (b,c) tied
    # in win rate -> tau-b = 2 / sqrt(3 * 2)
    assert row["kendall_tau"] == pytest.approx(2 / np.sqrt(6))


def hand_alpha(a: list[float], b: list[float]) -> float:
    """Krippendorff's alpha, interval, two raters, no missing value, written out: 1 - D_o / D_e with
    D_o = (2/N) sum_u (a_u - b_u)^2 and D_e = sum over ordered pairs of all N values of (v_i - v_j)^2 / (N(N-1))."""
    values = np.array(a + b, dtype=float)
    n = len(values)
    observed = 2 / n * sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    expected = ((values[:, None] - values[None, :]) ** 2).sum() / (n * (n - 1))
    return 1 - observed / expected


def dreambench_layout(root: Path, method: str, groups: dict[str, dict[str, list[float]]]) -> Path:
    """DreamBench++'s raw human ratings: raw_data/<group>/<annotator>-<method>.json, {key: [cp, pf]}, the
    keys of one group split over two annotator files as the released data is."""
    raw = root / "raw_data"
    for group, ratings in groups.items():
        keys = sorted(ratings)
        for part, chunk in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :])):
            write_json(raw / group / f"{part}-{method}.json", {k: ratings[k] for k in chunk})
    return raw


def test_alpha_against_dreambench_human_ratings_follows_their_analysis(tmp_path):
    keys = [f"{c}-{p}" for c in range(4) for p in range(3)]
    rng = np.random.default_rng(0)
    g1 = {k: [float(rng.integers(5)), float(rng.integers(5))] for k in keys}
    g2 = {k: [float(min(4, v[0] + rng.integers(2))), float(rng.integers(5))] for k, v in g1.items()}
    raw = dreambench_layout(tmp_path, "ip_adapter_plus", {"group1": g1, "group2": g2})
    ours = pd.DataFrame(
        {
            "method": "ip_adapter_plus",
            "key": keys,
            "judge_concept": [g1[k][0] for k in keys],  # agrees with group 1's concept ratings exactly
            "clip_t": [0.2 + 0.01 * g2[k][1] for k in keys],  # follows group 2's prompt ratings on a cosine scale
        }
    )
    table = ag.agreement_with_dreambench(raw, ours, ["judge_concept", "clip_t"]).set_index(["metric", "method"])
    concept = table.loc[("judge_concept", "ip_adapter_plus")]
    expected = (1.0 + hand_alpha([g2[k][0] for k in keys], [g1[k][0] for k in keys])) / 2  # mean over the groups
    assert concept["aspect"] == "concept" and concept["alpha"] == pytest.approx(expected)
    assert concept["human_human"] == pytest.approx(hand_alpha([g1[k][0] for k in keys], [g2[k][0] for k in keys]))
    text = table.loc[("clip_t", "ip_adapter_plus")]
    assert text["aspect"] == "prompt" and text["alpha"] < 0.2  # right order, wrong scale
    rescaled = [ag.rescaled(dict(zip(keys, ours["clip_t"], strict=True)))[k] for k in keys]
    g2_prompt = [g2[k][1] for k in keys]
    expected = (hand_alpha([g1[k][1] for k in keys], rescaled) + hand_alpha(g2_prompt, rescaled)) / 2
    assert text["alpha_rescaled"] == pytest.approx(expected)
    assert table.loc[("judge_concept", "mean"), "alpha"] == pytest.approx(concept["alpha"])


def test_the_cli_writes_the_agreement_of_a_built_study(tmp_path):
    experiment = make_experiment(tmp_path, prompts=2)
    runs = method_runs(find_run_dirs([experiment]), ["monkey", "ip_adapter_1.0", "masactrl"])
    study = tmp_path / "study"
    build_study(runs, StudySpec(questions_per_dataset=2, participants=3, attention_checks=1, seed=3), study)
    for run in runs:  # scores where `favours_monkey` ranks monkey first and `against_monkey` last, every item
        scores = ScoreSet(run.run_dir, "default")
        for row in RunStore(run.run_dir).rows():
            good = {"monkey": 0.9, "ip_adapter_1.0": 0.5, "masactrl": 0.1}[run.label]
            scores.write(
                {
                    "method": row["method"],
                    "item_id": row["item_id"],
                    "image_sha256": "0" * 64,
                    "scores": {"favours_monkey": good, "against_monkey": 1 - good},
                }
            )
    always_monkey = lambda dataset, options: options.index("monkey")  # noqa: E731
    files = [write_json(tmp_path / "r" / f"{p}.json", response(study, p, always_monkey)) for p in ("p01", "p02", "p03")]
    out = tmp_path / "agreement"
    assert main(["agreement", str(study), str(files[0].parent), "--out", str(out), "--resamples", "100"]) == 0
    table = pd.read_csv(out / "agreement.csv").set_index("metric")
    assert table.loc["favours_monkey", "agreement"] == 1.0 and table.loc["against_monkey", "agreement"] == 0.0
    assert table.loc["favours_monkey", "answers"] == 3 * 2 * 2  # 3 participants x 2 questions x 2 datasets
    assert "| favours_monkey | 1.000 |" in (out / "agreement.md").read_text()


def test_dreambench_options_go_together(tmp_path, caplog):
    study = tmp_path / "none"
    assert main(["agreement", str(study), str(tmp_path)]) == 2  # not a study folder: one line, exit 2
    assert "not a study folder" in caplog.text


def test_combined_scores_are_harmonic_means():
    frame = ag.with_combined(pd.DataFrame({"dino": [0.5, 0.0], "clip_t": [0.25, 0.0]}))
    assert frame["hm_dino_clip_t"].tolist() == pytest.approx([2 * 0.5 * 0.25 / 0.75, 0.0])
    assert "hm_judge" not in frame


def test_the_report_gains_the_agreement_section_computed_as_the_cli_computes_it(tmp_path):
    """eval.report.agreement names a built study: the report writes agreement.{csv,md} equal to the CLI's over
    the same answers (its bootstrap settings), lists them on index.html and puts the table in report.md; a
    study without responses, or an unknown key, stops with a line naming the key."""
    from conftest import compose_config
    from monkey.eval.report import build_report
    from monkey.eval.scoring import ROW_FIELDS
    from omegaconf import OmegaConf

    from monkey.errors import ConfigError

    experiment = make_experiment(tmp_path, prompts=2)
    runs = method_runs(find_run_dirs([experiment]), ["monkey", "ip_adapter_1.0", "masactrl"])
    study = tmp_path / "study"
    build_study(runs, StudySpec(questions_per_dataset=2, participants=3, attention_checks=1, seed=3), study)
    good = {"monkey": 0.9, "ip_adapter_1.0": 0.5, "masactrl": 0.1}
    for run in runs:
        scores = ScoreSet(run.run_dir, "default")
        for row in RunStore(run.run_dir).rows():
            value = good[run.label] + 0.01 * row["prompt_index"]
            record = {key: row.get(key) for key in ROW_FIELDS}  # as the evaluate stage writes them
            scores_of = {"clip_t": value, "dino": 1 - value, "clip_i": value}
            scores.write({**record, "method": row["method"], "image_sha256": "0" * 64, "scores": scores_of})
    always_monkey = lambda dataset, options: options.index("monkey")  # noqa: E731
    files = [write_json(tmp_path / "r" / f"{p}.json", response(study, p, always_monkey)) for p in ("p01", "p02", "p03")]
    cli = tmp_path / "cli"
    assert main(["agreement", str(study), str(files[0].parent), "--out", str(cli), "--resamples", "50"]) == 0

    eval_cfg = compose_config("eval=default").eval
    eval_cfg.report.bootstrap.samples = 50
    eval_cfg.report.agreement.study = str(study)
    eval_cfg.report.agreement.responses = [str(files[0].parent)]
    out = tmp_path / "report"
    report = build_report([experiment], out, eval_cfg, evaluate=False)
    assert report.agreement is not None
    assert (out / "agreement.csv").read_bytes() == (cli / "agreement.csv").read_bytes()
    table = pd.read_csv(out / "agreement.csv").set_index("metric")
    assert table.loc["clip_i", "agreement"] == 1.0 and table.loc["dino", "agreement"] == 0.0
    text = (out / "report.md").read_text()
    assert "## Which metric agrees with people" in text and "| clip_i | 1.000 |" in text
    assert 'href="agreement.md"' in (out / "index.html").read_text()

    bad = OmegaConf.to_container(eval_cfg, resolve=True)
    bad["report"]["agreement"]["responses"] = []
    with pytest.raises(ConfigError, match=r"eval\.report\.agreement\.responses"):
        build_report([experiment], tmp_path / "r2", OmegaConf.create(bad), evaluate=False)
    bad["report"]["agreement"]["responders"] = ["x"]
    with pytest.raises(ConfigError, match="unknown key"):
        build_report([experiment], tmp_path / "r3", OmegaConf.create(bad), evaluate=False)


def test_the_masked_metrics_sizes_are_not_metrics_that_pick_an_image():
    """subject_area is a size and mask_iou exists on MONKEY rows only: neither picks a best image."""
    frame = pd.DataFrame({"clip_t": [0.1], "dino_subject": [0.5], "subject_area": [0.3], "mask_iou": [0.2]})
    assert ag.score_metrics(frame) == ["clip_t", "dino_subject"]
