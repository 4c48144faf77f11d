"""The paper's Table 1 from `experiment=paper_*`: every row produced, the reference code's item set one
switch away, the pairing and size beside the numbers, marks on the shown digits, paper points only on
their own backbone's axis. Each check is against values written out here.

Planted bugs each test was seen to catch (then reverted):
- `masactrl` dropped from paper_dreambooth's method sweep             -> test_paper_experiments_cover_every_table1_row,
                                                                         test_paper_dreambooth_tiny_makes_all_six_rows
- `cycle` pairing row k of the limited list instead of the dataset row -> test_cycle_k_is_the_dataset_row_under_a_limit
- `cycle` with `row % len(locations) + 1`                              -> test_paper_dreambooth_cycle_composes_and_plans
- rank_marks ranking the unrounded means (round(12))                   -> test_marks_rank_the_shown_digits
- rank_marks ranking with `>` reversed (lowest bold)                   -> test_marks_rank_the_shown_digits
- a cell's interval from ci_low twice (ci_high dropped)                -> test_markdown_cells_carry_interval_n_size_pairing
- paper points mapped through our metric names (the old {x, y} check)  -> test_paper_points_only_on_their_backbones_axis
- pareto_plot drawing `paper` unfiltered again                         -> test_the_plot_draws_only_the_selected_paper_points
"""

import pandas as pd
import pytest
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
    assert lines[2] == "| ip_adapter_1.0 | *0.280* [0.270, 0.300] n=40 |  | 512x384 | cross (every subject x 20 prompts) |"
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
