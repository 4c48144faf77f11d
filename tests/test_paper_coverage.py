"""The paper's Table 1 from `experiment=paper_*`: every row produced, the reference code's item set one
switch away, the pairing and size beside the numbers, marks on the shown digits, paper points only on
their own backbone's axis. Each check is against values written out here.

Planted bugs each test was seen to catch (then reverted):
- `masactrl` dropped from paper_dreambooth's sweep     -> test_paper_experiments_cover_every_table1_row,
                                                          test_paper_dreambooth_tiny_makes_all_six_rows
- `cycle` pairing row k of the limited list            -> test_cycle_k_is_the_dataset_row_under_a_limit
- `cycle` with `(row + 1) % len(locations)`            -> test_paper_dreambooth_cycle_composes_and_plans
- rank_marks ranking the unrounded means (round(12))   -> test_marks_rank_the_shown_digits
- rank_marks with the order reversed (lowest bold)     -> test_marks_rank_the_shown_digits
- a cell's interval from ci_low twice                  -> test_markdown_cells_carry_interval_n_size_pairing
- paper points by our metric names (the old check)     -> test_paper_points_only_on_their_backbones_axis
- pareto_plot drawing the paper's columns unmapped     -> test_the_plot_draws_only_the_selected_paper_points
"""

import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import compose_config
from monkey.eval.report import paper_table_path
from monkey.eval.run_settings import RowSettings
from monkey.eval.tables import (
    paper_points,
    rank_marks,
    read_paper_table,
    table1_frame,
    table1_markdown,
    table1_stats,
)

from monkey.datasets.dreambooth import load_dreambooth
from monkey.plan import build_plan
from monkey.prompts import load_prompt_set
from monkey.runner import plan_from_config

PAPER = read_paper_table(paper_table_path(None))
EXPERIMENT_DATASET = {"paper_dreambooth": "dreambooth", "paper_magic": "magic"}


def swept_methods(experiment: str) -> list[str]:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="monkey.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert sorted(str(params["preset"]).split(",")) == ["fair", "paper"]
    return str(params["method"]).split(",")


@pytest.mark.parametrize("experiment", list(EXPERIMENT_DATASET))
def test_paper_experiments_cover_every_table1_row(experiment):
    names = dict(compose_config().eval.report.paper_names)
    produced = {names[m] for m in swept_methods(experiment) if m in names}
    wanted = set(PAPER.loc[PAPER["dataset"] == EXPERIMENT_DATASET[experiment], "method"])
    assert len(wanted) == 6
    assert wanted <= produced, f"{experiment} never produces {sorted(wanted - produced)}"


# ---- pairing ----------------------------------------------------------------------------------------


def test_paper_dreambooth_cycle_composes_and_plans():
    """`experiment=paper_dreambooth plan.pairing=cycle`: one item per source image, row k with prompt k mod 20."""
    cfg = compose_config("experiment=paper_dreambooth", "plan.pairing=cycle")
    items = plan_from_config(cfg)
    sources = load_dreambooth()  # the bundled subset: 30 subjects, one image each (dataset.images=first)
    locations = load_prompt_set("locations", "{subject_word} {location}").locations
    assert len(locations) == 20 and len(items) == len(sources) == 30
    assert [item.source.source_id for item in items] == [s.source_id for s in sources]
    assert [item.prompt_index for item in items] == [k % 20 for k in range(30)]
    for k, item in enumerate(items):
        assert item.prompt == f"{sources[k].subject_word} {locations[k % 20]}"
    assert items[21].prompt == f"{sources[21].subject_word} in the snow"  # 21 mod 20 = 1: the second location


def test_cycle_k_is_the_dataset_row_under_a_limit():
    """A subject limit keeps the full cycle plan's items of those subjects, not a re-numbered plan."""
    sources = load_dreambooth()
    prompts = load_prompt_set("locations", "{subject_word} {location}")
    full = {item.item_id: item for item in build_plan(sources, prompts, pairing="cycle")}
    subjects = [s.subject for s in sources]
    named = [subjects[22], subjects[3]]
    limited = build_plan(sources, prompts, pairing="cycle", limit_subjects=named)
    assert [item.prompt_index for item in limited] == [3, 22 % 20]  # dataset order, the dataset's row
    assert all(full[item.item_id] == item for item in limited)


# ---- Table 1: marks on the shown digits, intervals, n, size, pairing ----------------------------------


def summary_of(means: dict[str, float], metric: str = "clip_t") -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(variant=v, method=v, dataset="dreambooth", metric=metric, level="image", n=40, mean=x)
            | dict(ci_low=x - 0.01, ci_high=x + 0.02, subjects=2)
            for v, x in means.items()
        ]
    )


def test_marks_rank_the_shown_digits():
    # a and b both print 0.262 (a planted tie below the third decimal): both bold; c prints 0.261, one digit
    # lower: italic; d at 0.2614 also prints 0.261: italic too; e is lower still
    means = {"a": 0.26241, "b": 0.26199, "c": 0.26149, "d": 0.2614, "e": 0.2600}
    wide = table1_frame(summary_of(means), ["clip_t"], ["dreambooth"], [])
    marks = rank_marks(wide)[("dreambooth", "clip_t")].to_dict()
    assert marks == {"a": "best", "b": "best", "c": "second", "d": "second", "e": ""}
    # a one-digit difference in the shown value is a rank: 0.263 vs 0.262
    wide = table1_frame(summary_of({"a": 0.2628, "b": 0.2622}), ["clip_t"], ["dreambooth"], [])
    assert rank_marks(wide)[("dreambooth", "clip_t")].to_dict() == {"a": "best", "b": "second"}


def test_markdown_cells_carry_interval_n_size_pairing():
    summary = summary_of({"monkey": 0.31, "ip_adapter_1.0": 0.28})
    wide = table1_frame(summary, ["clip_t"], ["dreambooth"], [])
    settings = {
        "monkey": RowSettings(((256, 256),), "cycle (row k x prompt k mod 20)"),
        "ip_adapter_1.0": RowSettings(((512, 384),), "cross (every subject x 20 prompts)"),
    }
    text = table1_markdown(wide, rank_marks(wide), {}, {"clip_t": "CLIP-T"}, table1_stats(summary, wide), settings)
    lines = text.splitlines()
    assert lines[0] == "| method | DreamBooth CLIP-T | Pareto | size (h x w) | pairing |"
    ip_adapter = "| ip_adapter_1.0 | *0.280* [0.270, 0.300] n=40 |  | 512x384 | cross (every subject x 20 prompts) |"
    assert lines[2] == ip_adapter
    assert lines[3] == "| monkey | **0.310** [0.300, 0.330] n=40 |  | 256x256 | cycle (row k x prompt k mod 20) |"


# ---- Pareto plots: the paper's numbers only on their own backbone's axis ------------------------------


def test_paper_points_only_on_their_backbones_axis():
    dreambooth = PAPER[PAPER["dataset"] == "dreambooth"].set_index("method")
    assert paper_points(PAPER, "dreambooth", "clip_t", "dino").empty  # our dino is DINOv2; the paper's was v1
    v1 = paper_points(PAPER, "dreambooth", "clip_t", "dino_v1").set_index("method")
    assert v1.loc["MONKEY", "dino_v1"] == 0.529 and v1.loc["MASA", "clip_t"] == 0.186
    assert v1["dino_v1"].to_dict() == dreambooth["dino"].to_dict()
    clip = paper_points(PAPER, "magic", "clip_t", "clip_i").set_index("method")
    assert clip.loc["TF-TI2I", "clip_i"] == 0.484 and len(clip) == 6
    # a configuration that maps DINOv2 to the paper's column (user's choice) gets the points there
    assert len(paper_points(PAPER, "dreambooth", "clip_t", "dino", {"clip_t": "clip_t", "dino": "dino"})) == 6
    assert paper_points(PAPER, "dreambooth", "clip_t", "dino_v1", {}).empty


def test_the_plot_draws_only_the_selected_paper_points(tmp_path, monkeypatch):
    from monkey.eval import plots

    drawn = {}

    def keep(fig, path, **kwargs):
        found = [c for ax in fig.axes for c in ax.collections if c.get_gid() == "paper"]
        drawn[path.stem] = found[0].get_offsets().tolist() if found else []

    monkeypatch.setattr(plots, "atomic_savefig", keep)
    summary = pd.concat([summary_of({"m": 0.3}, metric) for metric in ("clip_t", "dino", "dino_v1")])
    for y in ("dino", "dino_v1"):
        plots.pareto_plot(summary, "dreambooth", "clip_t", y, tmp_path / y, [], {}, PAPER, "image")
    assert drawn["dino"] == []
    rows = PAPER[PAPER["dataset"] == "dreambooth"]
    assert drawn["dino_v1"] == [[a, b] for a, b in zip(rows["clip_t"], rows["dino"], strict=True)]


# ---- Done means: `experiment=paper_dreambooth model=tiny` makes all six paper rows under both presets ----


def run_app_in_process(monkeypatch, *overrides: str) -> None:
    """`monkey-bench <overrides>` in this process (no interpreter start-up, no second torch import);
    Hydra's logging set-up and its job config are undone afterwards, so later tests log as before and
    never look like a multirun's job (monkey.eval.stages.in_multirun_job)."""
    import logging

    from hydra.core.hydra_config import HydraConfig

    from monkey.cli import app

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, HydraConfig.instance().cfg)
    monkeypatch.setattr(sys, "argv", ["monkey-bench", *overrides])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread gains nothing, and on a busy machine it spins
    try:
        app()
    finally:
        torch.set_num_threads(threads)
        for handler in root.handlers[:]:
            if handler not in saved[0]:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:], root.level = saved[:2]
        HydraConfig.instance().cfg = saved[2]


def test_paper_dreambooth_tiny_makes_all_six_rows(tmp_path, monkeypatch):
    """The multirun generate+evaluate+report of every method x {fair, paper} on its tiny twin (FreeGraftor
    on the test fake, tests/fake_freegraftor), 1 subject x 1 prompt at 64 px: Table 1 and the comparison
    with the paper hold each of the paper's six rows under both presets."""
    from test_external import make_checkout

    venv = tmp_path / "venv"  # FreeGraftor's own interpreter: a bare venv without this project
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    checkout = make_checkout(tmp_path, "af8c190")
    for key, value in {
        "FREEGRAFTOR_CHECKOUT": checkout,
        "FREEGRAFTOR_PYTHON": venv / "bin" / "python",
        "FLUX_DEV": tmp_path / "FLUX.1-dev",
        "GROUNDING_DINO": tmp_path / "grounding-dino-tiny",
        "SAM": tmp_path / "sam_vit_h.pth",
    }.items():
        monkeypatch.setenv(key, str(value))
    run_app_in_process(
        monkeypatch,
        "experiment=paper_dreambooth",
        "model=tiny",
        "eval=tiny",
        f"run.root={tmp_path / 'runs'}",
        "plan.limit.subjects=1",
        "plan.limit.prompts=1",
        "generation.height=64",  # fair's size
        "generation.width=64",
        "method.paper.size=64",  # every method's paper size (all seven have a `paper:` block)
    )
    report = tmp_path / "runs" / "paper_dreambooth" / "report"
    names = dict(compose_config().eval.report.paper_names)
    table = pd.read_csv(report / "table1.csv")
    made = table[table["variant"] != "oracle"]
    rows = {(names.get(v.split(" (")[0]), v.split("preset=")[1].rstrip(")")) for v in made["variant"]}
    wanted = set(PAPER.loc[PAPER["dataset"] == "dreambooth", "method"])
    assert {(name, preset) for name in wanted for preset in ("fair", "paper")} <= rows
    assert made["dreambooth:clip_t"].notna().all() and (made["size"] == "64x64").all()
    assert set(made["pairing"]) == {"cross (every subject x 1 prompt)"}
    comparison = pd.read_csv(report / "paper_comparison.csv")
    compared = comparison[(comparison["metric"] == "dino_v1") & (comparison["preset"] == "paper")]
    assert set(compared["paper_method"]) == wanted and compared["ours"].notna().all()
    assert compared["fair"].notna().all()  # each paper row's fair twin beside it
