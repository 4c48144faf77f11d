"""monkey-study: question drawing, balanced assignment, the static pages' content, the tally against hand
counts, the statistics against independent references, and every kind of bad input."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monkey.eval.collect import find_run_dirs
from study_helpers import METHODS, make_experiment, read_assignments, response, screens, write_json

from monkey.errors import DataError
from monkey.study import stats
from monkey.study.cli import default_paper_names, main
from monkey.study.questions import method_runs
from monkey.study.site import StudySpec, build_study
from monkey.study.table3 import paper_table3_path
from monkey.study.tally import TallySettings, tally_study

QUESTIONS, PARTICIPANTS, CHECKS = 3, 4, 2
FAST = TallySettings(resamples=2000, bt_resamples=30)


def build(
    experiment: Path, out: Path, questions=QUESTIONS, participants=PARTICIPANTS, checks=CHECKS, seed=7, methods=METHODS
):
    runs = method_runs(find_run_dirs([experiment]), list(methods))
    return build_study(runs, StudySpec(questions, participants, checks, seed), out)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="module")
def study(experiment, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "study"
    build(experiment, out)
    return out


def position_counts(study: Path, kind: str = "study") -> dict[str, Counter]:
    """dataset -> Counter of (method, position) over the dataset's screens of `kind`."""
    counts: dict[str, Counter] = {}
    for row in read_assignments(study):
        if row["kind"] == kind:
            counts.setdefault(row["dataset"], Counter())[(row["option"], int(row["position"]))] += 1
    return counts


def test_every_method_appears_equally_often_at_every_position(study):
    # 3 questions x 4 participants = 12 screens per dataset, 3 methods: each (method, position) exactly 4 times
    counts = position_counts(study)
    assert set(counts) == {"dreambooth", "magic"}
    for dataset, counter in counts.items():
        assert counter == Counter({(m, p): 4 for m in METHODS for p in range(3)}), dataset
    orders: dict[str, set] = {}
    for (_, question), screen in screens(study).items():
        orders.setdefault(question, set()).add(tuple(screen["options"]))
    assert all(len(seen) == 3 for seen in orders.values())  # 4 participants of a question see all 3 rows


def test_balance_within_one_when_screens_do_not_divide(experiment, tmp_path):
    out = tmp_path / "uneven"
    build(experiment, out, questions=2, participants=4)  # 8 screens per dataset, 3 methods
    for counter in position_counts(out).values():
        assert set(counter) == {(m, p) for m in METHODS for p in range(3)}
        assert max(counter.values()) - min(counter.values()) <= 1
        for position in range(3):  # each position is shown once per screen
            assert sum(counter[(m, position)] for m in METHODS) == 8


def test_no_participant_is_tied_to_one_order_when_participants_divide_by_methods(experiment, tmp_path):
    out = tmp_path / "divisible"
    build(experiment, out, questions=6, participants=3, checks=0)  # 3 participants, 3 methods
    orders: dict[tuple[str, str], set] = {}
    for (person, question), screen in screens(out).items():
        orders.setdefault((person, question.split("-q")[0]), set()).add(tuple(screen["options"]))
    assert len(orders) == 6 and all(len(seen) >= 2 for seen in orders.values())
    assert all(len(set(c.values())) == 1 for c in position_counts(out).values())  # 18 screens: 2 per (method, position)


def test_every_participant_answers_every_question_in_own_order_with_checks(study):
    found = screens(study)
    definition = json.loads((study / "study.json").read_text())
    questions = set(definition["questions"])
    assert len(questions) == 2 * QUESTIONS
    orders, source_positions = [], []
    for person in ["p01", "p02", "p03", "p04"]:
        mine = {q: s for (p, q), s in found.items() if p == person}
        assert {q for q, s in mine.items() if s["kind"] == "study"} == questions
        checks = [s for s in mine.values() if s["kind"] == "attention"]
        assert len(checks) == CHECKS
        for screen in mine.values():  # each screen shows every method once, a check replaces one by the copy
            expected = set(METHODS) if screen["kind"] == "study" else None
            if expected:
                assert sorted(screen["options"]) == sorted(METHODS)
            else:
                assert screen["options"].count("source-duplicate") == 1
                source_positions.append(screen["options"].index("source-duplicate"))
                assert screen["screen"] != 1
        orders.append([q for q, _ in sorted(mine.items(), key=lambda kv: kv[1]["screen"])])
        assert sorted(s["screen"] for s in mine.values()) == list(range(1, len(questions) + CHECKS + 1))
    assert len({tuple(o) for o in orders}) > 1  # seeded, but not one order for all
    assert Counter(source_positions) == Counter({0: 3, 1: 3, 2: 2})  # 8 checks cycle over 3 positions


def test_questions_spread_over_subjects_and_items_agree(study):
    definition = json.loads((study / "study.json").read_text())
    for dataset in ("dreambooth", "magic"):
        chosen = [q for q in definition["questions"].values() if q["dataset"] == dataset]
        assert {q["subject"] for q in chosen} == {"alpha", "beta"}  # 3 questions over 2 subjects: both
        for question in chosen:  # every method's image is of the question's item, from its own run folder
            stem = question["item_id"].split("/")[2] + "_" + "_".join(question["item_id"].split("/")[3:])
            for label, path in question["images"].items():
                assert path.endswith(f"/{label}/images/{label}/{dataset}/{question['subject']}/{stem}.png")
    check_items = {c["item_id"] + c["dataset"] for c in definition["checks"].values()}
    asked = {q["item_id"] + q["dataset"] for q in definition["questions"].values()}
    assert not check_items & asked  # enough items: checks use items outside the study


def test_pages_hide_method_identity_and_need_no_network(study):
    site = study / "site"
    for page in sorted(site.glob("p0*.html")):
        html = page.read_text()
        for method in METHODS:
            assert f'"{method}"' not in html and f"/{method}/" not in html
        assert "http://" not in html and "https://" not in html  # no CDN
        data = json.loads(html.split('type="application/json">')[1].split("</script>")[0])
        for screen in data["screens"]:
            for path in [screen["subject"], *screen["options"]]:
                assert (site / path).is_file() and path.startswith("img/")
    assert "http" not in (site / "study.js").read_text()


def test_build_is_seeded_and_refuses_to_overwrite_another_study(experiment, study, tmp_path):
    again = tmp_path / "again"
    build(experiment, again)
    assert (again / "assignments.csv").read_text() == (study / "assignments.csv").read_text()
    other = tmp_path / "other"
    build(experiment, other, seed=8)
    assert (other / "assignments.csv").read_text() != (study / "assignments.csv").read_text()
    with pytest.raises(DataError, match="holds another study"):
        build(experiment, again, seed=8)
    cli = tmp_path / "cli"
    arguments = ["--questions", "3", "--participants", "4", "--attention-checks", "2", "--seed", "7"]
    assert main(["build", str(experiment), "--methods", ",".join(METHODS), "--out", str(cli), *arguments]) == 0
    assert (cli / "assignments.csv").read_text() == (study / "assignments.csv").read_text()


def pick_method(per_dataset: dict[str, str]):
    return lambda dataset, options: options.index(per_dataset[dataset])


def tally(study: Path, responses: list[Path]):
    return tally_study(study, responses, FAST, default_paper_names(), paper_table3_path())


def test_tally_matches_hand_counts_excludes_and_sits_beside_the_paper(study, tmp_path):
    files = [
        write_json(
            tmp_path / "r1.json", response(study, "p01", pick_method({"dreambooth": "monkey", "magic": "monkey"}))
        ),
        write_json(
            tmp_path / "r2.json",
            response(study, "p02", pick_method({"dreambooth": "ip_adapter_1.0", "magic": "monkey"})),
        ),
        write_json(
            tmp_path / "r3.json", response(study, "p03", pick_method({"dreambooth": "masactrl", "magic": "masactrl"}))
        ),
    ]
    cheat = response(study, "p04", pick_method({"dreambooth": "ip_adapter_1.0", "magic": "ip_adapter_1.0"}))
    check = next(a for a in cheat["answers"] if a["question"].startswith("check-"))
    check["choice"] = (check["choice"] + 1) % 3  # missed the subject's copy once
    files.append(write_json(tmp_path / "r4.json", cheat))

    result = tally(study, files)
    expected = pd.DataFrame(
        {"monkey": [3, 6, 9], "ip_adapter_1.0": [3, 0, 3], "masactrl": [3, 3, 6]},
        index=["dreambooth", "magic", "aggregated"],
    )
    assert result.counts.loc[expected.index, expected.columns].equals(expected)
    assert result.exclusions[["participant", "reason"]].values.tolist() == [["p04", "failed attention check"]]
    assert not result.choices[result.choices["participant"] == "p04"]["kept"].any()

    table = result.table3.set_index(["dataset", "method"])
    assert table.loc[("dreambooth", "monkey"), "share"] == pytest.approx(3 / 9)
    assert table.loc[("dreambooth", "monkey"), "paper_method"] == "MONKEY"
    assert table.loc[("dreambooth", "monkey"), "paper_count"] == 133
    assert table.loc[("magic", "masactrl"), "paper_count"] == 35
    assert table.loc[("aggregated", "monkey"), "paper_count"] == 477
    assert table.loc[("aggregated", "ip_adapter_1.0"), "paper_share"] == pytest.approx(145 / 1200)

    rates = result.win_rates.set_index(["dataset", "method"])
    assert rates.loc[("aggregated", "monkey"), "win_rate"] == pytest.approx(9 / 18)
    # per participant (p01, p02, p03): monkey won 6, 3, 0 of 6 answers each: a hand-written bootstrap
    rng = np.random.default_rng(0)
    wins, answers = np.array([6, 3, 0.0]), np.array([6, 6, 6.0])
    picks = rng.integers(0, 3, size=(4000, 3))
    hand = np.percentile(wins[picks].sum(1) / answers[picks].sum(1), [2.5, 97.5])
    assert rates.loc[("aggregated", "monkey"), ["low", "high"]].tolist() == pytest.approx(hand, abs=0.06)


def test_incomplete_and_missing_participants_are_counted_exclusions(study, tmp_path):
    both = pick_method({"dreambooth": "monkey", "magic": "masactrl"})
    files = [
        write_json(tmp_path / "a.json", response(study, "p01", both)),
        write_json(tmp_path / "b.json", response(study, "p02", both, skip=2)),
    ]
    result = tally(study, files)
    reasons = dict(result.exclusions[["participant", "reason"]].values.tolist())
    assert reasons == {"p02": "incomplete", "p03": "no response", "p04": "no response"}
    assert result.counts.loc["aggregated"].sum() == 2 * QUESTIONS  # p01 alone
    kept = result.choices[result.choices["kept"]]
    assert set(kept["participant"]) == {"p01"} and len(result.choices) == 2 * (2 * QUESTIONS + CHECKS) - 2
    with pytest.raises(DataError, match=r"no participant left to count .* \(excluded: 3 no response, 1 incomplete\)"):
        tally(study, files[1:])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(study_id="0123456789ab"), "a response to study '0123456789ab', not to this study"),
        (lambda r: r.update(participant="p99"), "participant 'p99' is not in this study"),
        (lambda r: r["answers"][0].update(choice=3), r"choice=3, allowed 0..2"),
        (lambda r: r["answers"][0].update(question="dreambooth-q99"), "not on p01's page"),
        (lambda r: r["answers"].append(dict(r["answers"][0])), "answered twice"),
        (lambda r: r.update(format="something"), "not a monkey-study response"),
    ],
)
def test_bad_responses_stop_with_the_file_named(study, tmp_path, edit, message):
    bad = response(study, "p01", pick_method({"dreambooth": "monkey", "magic": "monkey"}))
    edit(bad)
    path = write_json(tmp_path / "bad.json", bad)
    with pytest.raises(DataError, match=message) as err:
        tally(study, [path])
    assert str(path) in str(err.value)


def test_a_participant_twice_is_an_error_and_the_cli_exits_2(study, tmp_path, caplog):
    first = write_json(tmp_path / "one.json", response(study, "p01", lambda d, o: 0))
    second = write_json(tmp_path / "two.json", response(study, "p01", lambda d, o: 1))
    assert main(["tally", str(study), str(first), str(second), "--out", str(tmp_path / "t")]) == 2
    assert "participant 'p01' answered twice" in caplog.text and str(first) in caplog.text
    assert not (tmp_path / "t").exists()  # nothing written


def test_cli_writes_the_tables(study, tmp_path):
    path = write_json(
        tmp_path / "one.json", response(study, "p01", pick_method({"dreambooth": "monkey", "magic": "masactrl"}))
    )
    out = tmp_path / "tally"
    assert main(["tally", str(study), str(path), "--out", str(out), "--resamples", "200", "--bt-resamples", "5"]) == 0
    assert "| DreamBooth (paper) |" in (out / "table3.md").read_text()
    assert r"\toprule" in (out / "table3.tex").read_text()
    table = pd.read_csv(out / "table3.csv")
    assert table.query("dataset == 'magic' and method == 'masactrl'")["count"].item() == QUESTIONS
    for name in ("win_rates.csv", "bradley_terry.csv", "agreement.csv", "exclusions.csv", "tally.md"):
        assert (out / name).is_file()


def test_run_folder_without_images_or_unknown_method_is_an_error(experiment, tmp_path, caplog):
    import shutil

    broken = tmp_path / "exp"
    shutil.copytree(experiment, broken)
    shutil.rmtree(broken / "masactrl" / "images")
    with pytest.raises(DataError, match=r"masactrl: no finished image"):
        build(broken, tmp_path / "s")
    for row_file in (broken / "masactrl" / "manifest").iterdir():  # a run killed before its first image
        row_file.write_text("")
    with pytest.raises(DataError, match=r"masactrl: no image \(manifest/ has no rows\)"):
        build(broken, tmp_path / "s")
    code = main(["build", str(experiment), "--methods", "monkey,rectifid", "--out", str(tmp_path / "s2")])
    assert code == 2 and "no such method" in caplog.text and "rectifid" in caplog.text


def luce_choices(strengths: np.ndarray, participants: int, questions: int, seed: int) -> pd.DataFrame:
    """Synthetic answers: each question shows every method, one is picked with p ∝ exp(strength)."""
    rng = np.random.default_rng(seed)
    p = np.exp(strengths) / np.exp(strengths).sum()
    picks = rng.choice(len(strengths), size=(participants, questions), p=p)
    return pd.DataFrame(
        [
            {"participant": f"p{i}", "question": f"q{j}", "dataset": "x", "chosen": f"m{picks[i, j]}"}
            for i in range(participants)
            for j in range(questions)
        ]
    )


def test_bradley_terry_recovers_a_known_ordering():
    truth = np.array([0.3, -1.2, 1.5, 0.0, -0.6])
    methods = [f"m{i}" for i in range(5)]
    result = stats.bradley_terry(luce_choices(truth, 30, 40, 1), methods, ["x"], 40, 0, 0.95, 0.01)
    scores = result[result["dataset"] == "x"].set_index("method")
    assert list(scores["score"].sort_values().index) == [methods[i] for i in np.argsort(truth)]
    assert scores["score"].to_numpy() == pytest.approx(truth - truth.mean(), abs=0.25)
    assert (scores["low"] <= scores["score"]).all() and (scores["score"] <= scores["high"]).all()


def test_bradley_terry_of_two_methods_is_the_log_odds():
    # With two options Luce is Bradley-Terry and the ML log-strength difference is log(wins_a / wins_b).
    choices = luce_choices(np.array([0.8, 0.0]), 10, 30, 2)
    wins = choices["chosen"].value_counts()
    result = stats.bradley_terry(choices, ["m0", "m1"], ["x"], 5, 0, 0.95, 0.0).set_index(["dataset", "method"])
    difference = result.loc[("x", "m0"), "score"] - result.loc[("x", "m1"), "score"]
    assert difference == pytest.approx(np.log(wins["m0"] / wins["m1"]), abs=1e-4)


# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal example: 4 observers, 12 units.
TEXTBOOK = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def hand_alpha(data: dict[str, list]) -> float:
    """Nominal alpha from the coincidence matrix, written out: 1 - (n - 1) sum_{c!=k} o_ck / sum_{c!=k} n_c n_k."""
    values = sorted({v for row in data.values() for v in row if v is not None})
    o = np.zeros((len(values), len(values)))
    for unit in zip(*data.values(), strict=True):
        present = [values.index(v) for v in unit if v is not None]
        if len(present) < 2:
            continue
        for i, a in enumerate(present):
            for j, b in enumerate(present):
                if i != j:
                    o[a, b] += 1 / (len(present) - 1)
    n_c, n = o.sum(1), o.sum()
    off = ~np.eye(len(values), dtype=bool)
    return 1 - (n - 1) * o[off].sum() / np.outer(n_c, n_c)[off].sum()


def test_alpha_matches_the_textbook_example():
    choices = pd.DataFrame(
        [
            {"participant": rater, "question": f"u{unit:02d}", "dataset": "x", "chosen": str(value)}
            for rater, row in TEXTBOOK.items()
            for unit, value in enumerate(row)
            if value is not None
        ]
    )
    result = stats.agreement(choices, [str(v) for v in range(1, 6)], ["x"]).set_index("dataset")
    assert result.loc["x", "alpha"] == pytest.approx(0.743, abs=5e-4)  # the paper's printed value
    assert result.loc["x", "alpha"] == pytest.approx(hand_alpha(TEXTBOOK), abs=1e-9)
    assert result.loc["x", ["raters", "units"]].tolist() == [4, 12]


def test_methods_generated_from_different_prompts_are_refused(tmp_path):
    from eval_helpers import fake_generate
    from study_helpers import two_dataset_items

    items = two_dataset_items(tmp_path, prompts=1)
    fake_generate(tmp_path / "exp" / "monkey", items, "monkey")
    fake_generate(tmp_path / "exp" / "masactrl", items, "masactrl", prompt_suffix=", photo")
    with pytest.raises(DataError, match=r"different prompts \['alpha in the jungle', 'alpha in the jungle, photo'\]"):
        build(tmp_path / "exp", tmp_path / "s", questions=1, participants=1, checks=0, methods=["monkey", "masactrl"])


def test_methods_are_named_by_variant_label_as_in_the_report(tmp_path):
    from eval_helpers import fake_generate
    from study_helpers import two_dataset_items

    items = two_dataset_items(tmp_path, prompts=1)
    for folder, method in [
        ("monkey,plan.limit.prompts=1", "monkey"),
        ("masactrl,plan.limit.prompts=1", "masactrl"),
        ("ip_adapter_1.0,method.scale=0.5,plan.limit.prompts=1", "ip_adapter_1.0"),
    ]:
        fake_generate(tmp_path / "exp" / folder, items, method)
    runs = method_runs(find_run_dirs([tmp_path / "exp"]), None)
    assert [(r.label, r.method, r.run_dir.name) for r in runs] == [
        ("ip_adapter_1.0 (method.scale=0.5)", "ip_adapter_1.0", "ip_adapter_1.0,method.scale=0.5,plan.limit.prompts=1"),
        ("masactrl", "masactrl", "masactrl,plan.limit.prompts=1"),
        ("monkey", "monkey", "monkey,plan.limit.prompts=1"),
    ]
