"""The report as something to navigate and compare: index.html's links and Table 1's sources,
`monkey-report --compare` (paired differences against a hand computation, the warning when the two
sides hold different items), and the Pareto plots' labels (no overlap, inside the frame).

Bugs planted to check that these tests can fail (each reverted):
    index_page.cell_source keeps one row per (run_dir, method), linking one config hash  -> cells_link_exactly
    index_page.files_html links the pdf without its suffix (a broken link)               -> links_resolve
    compare.paired_differences takes A - B                                              -> by_hand
    compare.paired_differences passes item ids as the bootstrap's clusters (not subjects) -> by_hand
    compare.Coverage.warning returns None when only B has extra items                    -> warns
    compare.check_same_score_set never compares the two sides' backbones                 -> warns (exit 2 case)
    label_placement.overlaps uses `or` for the vertical test                             -> pareto_labels
    label_placement.place_labels drops the inside-the-axes check (cost 0)                -> pareto_labels
    plots.pareto_figure leaves the frontier line out of the obstacles                     -> pareto_labels
    plots.pareto_figure places labels before tight_layout                                -> pareto_labels
    plots.pareto_figure labels only the first reference in the legend (as before)        -> pareto_labels
"""

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from eval_helpers import fake_generate, make_dataset, plan_items
from monkey.eval.cli import main as report_main
from monkey.eval.compare import compare_runs
from monkey.eval.report import build_report
from monkey.eval.score_store import ScoreSet
from monkey.eval.scoring import ROW_FIELDS
from omegaconf import OmegaConf

from monkey.hashing import stable_hash
from monkey.store import RunStore

METRICS = ("clip_t", "dino", "clip_i", "dino_v1")

FOLDER_A = "ip_adapter_1.0"
FOLDER_B = "ip_adapter_1.0,method.scale=0.5"
HASHES_A = {"alpha": "a1a1a1a1a1a1a1a1", "beta": "b2b2b2b2b2b2b2b2"}  # subject -> config hash in folder A
HASH_B = "c3c3c3c3c3c3c3c3"


def set_config_hashes(run_dir: Path, hash_of) -> None:
    """Rewrite the manifest rows' config_hash (hash_of(row)) and register each config, as the runner does."""
    store = RunStore(run_dir)
    for path in store.manifest_files():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        for row in rows:
            row["config_hash"] = hash_of(row)
            store.register_config(row["method"], row["config_hash"], {"hash": row["config_hash"]})
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def save_hydra_config(run_dir: Path, scale: float, dataset) -> None:
    folder = run_dir / ".hydra" / "shard-0-of-1"
    folder.mkdir(parents=True)
    config = {"method": {"name": "ip_adapter_1.0", "scale": scale}, "dataset": OmegaConf.to_container(dataset)}
    OmegaConf.save(OmegaConf.create(config), folder / "config.yaml")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two run folders of one method: A holds the 4 items (2 config hashes), B 3 of them (scale 0.5)."""
    from conftest import compose_config

    root = tmp_path_factory.mktemp("navigation")
    dataset = make_dataset(root / "data")
    items = plan_items(dataset, prompts=2)
    experiment = root / "runs" / "nav"
    fake_generate(experiment / FOLDER_A, items, "ip_adapter_1.0")
    fake_generate(experiment / FOLDER_B, items[:3], "ip_adapter_1.0", prompt_suffix=", scaled")
    set_config_hashes(experiment / FOLDER_A, lambda row: HASHES_A[row["subject"]])
    set_config_hashes(experiment / FOLDER_B, lambda row: HASH_B)
    save_hydra_config(experiment / FOLDER_A, 1.0, dataset)
    save_hydra_config(experiment / FOLDER_B, 0.5, dataset)
    for folder in (FOLDER_A, FOLDER_B):
        write_scores(experiment / folder)
    cfg = compose_config("eval=tiny", "eval.report.bootstrap.samples=200")
    return build_report([experiment], experiment / "report", cfg.eval, evaluate=False)


def write_scores(run_dir: Path) -> None:
    """Score records as the evaluator writes them, with made-up scores (no backbone: fast, and the
    numbers are known): each metric a hash of (folder, item, metric) in [0, 1)."""
    scores = ScoreSet(run_dir, "tiny")
    scores.register({"backbones": {"made": {"kind": "up"}}})
    for row in RunStore(run_dir).rows():
        values = {m: int(stable_hash([run_dir.name, row["item_id"], m], 6), 16) / 16**6 for m in METRICS}
        scores.write({**{k: row.get(k) for k in ROW_FIELDS}, "scores": values})


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (tag, class, url)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append((tag, attrs.get("class") or "", attrs[key]))


def page_links(page: Path) -> list[tuple[str, str, str]]:
    parser = Links()
    parser.feed(page.read_text())
    return parser.links


def test_index_links_resolve_to_files_and_name_every_output(report):
    out = report.out_dir
    links = page_links(out / "index.html")
    targets = {(out / unquote(url)).resolve() for _, _, url in links}
    missing = [t for t in targets if not t.is_file()]
    assert not missing, missing
    for name in ("table1.md", "table1.csv", "paper_comparison.md", "gallery.html", "report.md", "scores.csv"):
        assert (out / name).resolve() in targets, name
    for plot in out.glob("pareto_*"):  # every plot, png and pdf
        assert plot.resolve() in targets, plot.name


class Table1Cells(HTMLParser):
    """Table 1 on index.html: variant -> [per cell: [(link class, url), ...]]."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, list[list[tuple[str, str]]]] = {}
        self.in_table, self.row, self.text = False, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "table1":
            self.in_table = True
        elif self.in_table and tag == "tr":
            self.row = []
        elif self.in_table and tag == "td" and self.row is not None:
            self.row.append([])
            self.text = [] if len(self.row) == 1 else None
        elif self.in_table and tag == "a" and self.row:
            self.row[-1].append((attrs.get("class"), attrs["href"]))

    def handle_data(self, data):
        if self.text is not None:
            self.text.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self.text is not None:
            self.variant, self.text = "".join(self.text), None
        elif tag == "tr" and self.row:
            self.rows[self.variant] = self.row[1:]
            self.row = None
        elif tag == "table":
            self.in_table = False


def test_table1_cells_link_exactly_their_rows_and_config_hashes(report):
    out = report.out_dir
    parser = Table1Cells()
    parser.feed((out / "index.html").read_text())
    scaled = "ip_adapter_1.0 (method.scale=0.5)"
    expected = {"ip_adapter_1.0": set(HASHES_A.values()), scaled: {HASH_B}}
    assert set(parser.rows) == set(expected)
    for variant, cells in parser.rows.items():
        linked = [cell for cell in cells if cell]
        assert len(linked) == 3, variant  # clip_t, dino, clip_i of dreambooth
        for cell in linked:
            (kind, rows_url), *configs = cell
            assert kind == "rows" and {k for k, _ in configs} <= {"config"}
            hashes = {Path(unquote(url)).stem.split("-", 1)[1] for _, url in configs}
            assert hashes == expected[variant], (variant, hashes)
            assert all((out / unquote(url)).resolve().parent.name == "configs" for _, url in configs)
            table = pd.read_csv(out / unquote(rows_url))
            assert set(table["variant"]) == {variant} and set(table["dataset"]) == {"dreambooth"}
            assert len(table) == {"ip_adapter_1.0": 4, scaled: 3}[variant]
            # each row's own config file, linked beside it in the rows file
            assert set(table["config_hash"]) == expected[variant]
            assert all((out / "rows" / c).resolve().is_file() for c in table["config"])


def score_table(run_dir: Path) -> dict[str, tuple[str, float, float]]:
    """item_id -> (subject, clip_t, dino) straight from the score records (not through collect_scores)."""
    return {
        r["item_id"]: (r["subject"], r["scores"]["clip_t"], r["scores"]["dino"])
        for r in ScoreSet(run_dir, "tiny").records()
        if r["method"] != "oracle"
    }


def test_compare_paired_differences_by_hand(report):
    folder = report.out_dir.parent
    comparison = compare_runs(folder / FOLDER_A, folder / FOLDER_B, "tiny", ["clip_t", "dino"], 400, 7, 0.9)
    a, b = score_table(folder / FOLDER_A), score_table(folder / FOLDER_B)
    common = sorted(set(a) & set(b))
    assert len(common) == 3
    for column, metric in ((1, "clip_t"), (2, "dino")):
        diffs = np.array([b[i][column] - a[i][column] for i in common])
        subjects = np.array([a[i][0] for i in common])
        row = comparison.differences.set_index("metric").loc[metric]
        assert row["n"] == 3 and row["subjects"] == 2
        assert row["diff"] == pytest.approx(diffs.mean(), abs=1e-6)
        assert row["mean_b"] - row["mean_a"] == pytest.approx(diffs.mean(), abs=1e-6)
        # the interval: a written-out subject-cluster bootstrap with the same seed stream
        from monkey.eval.aggregate import group_seed

        names = sorted(set(subjects))
        rng = np.random.default_rng(group_seed(7, "ip_adapter_1.0", "ip_adapter_1.0", "dreambooth", metric))
        means = []
        for _ in range(400):
            drawn = [names[k] for k in rng.integers(0, len(names), size=len(names))]
            values = np.concatenate([diffs[subjects == s] for s in drawn])
            means.append(values.mean())
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(np.percentile(means, [5, 95])), abs=1e-9)
    diff = comparison.config_diff.set_index("key")
    assert diff.loc["method.scale", "a"] == 1.0 and diff.loc["method.scale", "b"] == 0.5
    assert "dataset.root" not in diff.index  # what both share is not listed


def test_compare_warns_when_the_item_sets_differ(report, tmp_path, caplog):
    folder = report.out_dir.parent
    comparison = compare_runs(folder / FOLDER_A, folder / FOLDER_B, "tiny", ["clip_t"], 50, 0, 0.95)
    (coverage,) = comparison.coverage
    assert coverage.common == 3 and coverage.only_b == [] and len(coverage.only_a) == 1
    assert coverage.only_a[0] not in score_table(folder / FOLDER_B)
    assert "1 only in A, 0 only in B" in comparison.warnings[0]
    swapped = compare_runs(folder / FOLDER_B, folder / FOLDER_A, "tiny", ["clip_t"], 50, 0, 0.95)
    assert "0 only in A, 1 only in B" in swapped.warnings[0]
    same = compare_runs(folder / FOLDER_A, folder / FOLDER_A, "tiny", ["clip_t"], 50, 0, 0.95)
    assert same.warnings == [] and (same.differences["diff"] == 0).all()
    # the command line: files written, the warning logged once; one folder is refused with exit 2
    out = tmp_path / "ab"
    caplog.set_level("WARNING")
    assert report_main(["--compare", str(folder / FOLDER_A), str(folder / FOLDER_B), "--out", str(out)]) == 0
    assert sum("only in A" in r.getMessage() for r in caplog.records) == 1
    assert {"compare.md", "compare.csv", "config_diff.csv"} <= {p.name for p in out.iterdir()}
    assert "**Warning:**" in (out / "compare.md").read_text()
    assert report_main(["--compare", str(folder / FOLDER_A), "--out", str(tmp_path / "one")]) == 2
    assert not (tmp_path / "one").exists()
    # scores made with other backbones do not compare: one line, exit 2, nothing written
    other = tmp_path / "other" / FOLDER_B
    shutil.copytree(folder / FOLDER_B, other)
    (other / "scores" / "tiny" / "eval_config.json").write_text(json.dumps({"backbones": {"made": {"kind": "other"}}}))
    caplog.clear()
    assert report_main(["--compare", str(folder / FOLDER_A), str(other), "--out", str(tmp_path / "mixed")]) == 2
    assert "made with other settings" in caplog.records[-1].getMessage() and not (tmp_path / "mixed").exists()


def test_merged_report_warns_about_uneven_coverage(report, caplog):
    from monkey.eval.compare import coverage_warnings

    (warning,) = coverage_warnings(report.scores)
    assert "ip_adapter_1.0 (method.scale=0.5): 3, ip_adapter_1.0: 4" in warning


def crowded_summary() -> pd.DataFrame:
    """Six sweep neighbours within 0.001 of one spot, a frontier through them, and two references."""
    points = {f"ip_adapter_1.0 (method.scale=0.5{k})": (0.300 + 0.0002 * k, 0.700 - 0.0002 * k) for k in range(6)}
    points |= {
        # with the crowd, the frontier: a line straight through the crowd's labels' first choices
        "monkey (method.threshold_rule=otsu, method.combine=max)": (0.330, 0.670),
        "masactrl": (0.270, 0.730),
        "ip_adapter_0.5": (0.260, 0.600),  # below the frontier
        "text_only": (0.340, 0.400),
        "oracle": (0.220, 0.800),
    }
    rows = []
    for variant, (clip_t, clip_i) in points.items():
        for metric, mean in (("clip_t", clip_t), ("clip_i", clip_i)):
            rows.append(
                dict(variant=variant, method=variant.split(" ")[0], dataset="dreambooth", metric=metric, level="image")
                | dict(n=8, mean=mean, ci_low=mean - 0.004, ci_high=mean + 0.004)
            )
    return pd.DataFrame(rows)


def test_pareto_labels_do_not_overlap_and_stay_inside_the_axes():
    from matplotlib.text import Text
    from monkey.eval.label_placement import line_samples
    from monkey.eval.plots import pareto_figure

    summary = crowded_summary()
    paper = pd.DataFrame({"method": ["MONKEY", "IP-Adapter"], "dataset": "dreambooth", "clip_t": [0.31, 0.30]})
    paper["clip_i"] = [0.701, 0.699]  # on top of the crowd
    fig = pareto_figure(summary, "dreambooth", "clip_t", "clip_i", ["text_only", "oracle"], {}, paper)
    ax = fig.axes[0]
    fig.canvas.draw()  # the boxes as drawn
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    texts = [t for t in ax.texts if t.get_text()]
    assert sorted(t.get_text() for t in texts) == sorted([*summary["variant"].unique(), "MONKEY", "IP-Adapter"])
    boxes = [Text.get_window_extent(t, renderer) for t in texts]  # the text itself, not its leader line
    for i, box in enumerate(boxes):
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, texts[i]
        for j in range(i):
            assert not box.overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())
    # the frontier stays visible: no label lies on its line
    front = [line for line in ax.get_lines() if line.get_label() == "Pareto frontier"]
    (frontier,) = front
    xs, ys = line_samples(*frontier.get_data())
    pixels = ax.transData.transform(np.column_stack([xs, ys]))
    for box in boxes:
        assert not any(box.contains(px, py) for px, py in pixels)
    # every colour is explained, and the legend sits beside the axes
    legend = ax.get_legend()
    names = {t.get_text() for t in legend.get_texts()}
    assert names == {
        "on the frontier",
        "not on the frontier",
        "reference (not ranked)",
        "Pareto frontier",
        "paper (reported)",
    }
    assert legend.get_window_extent(renderer).x0 >= frame.x1
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_gallery_cell_shows_its_seed_only_where_it_is_not_the_rows():
    from monkey.eval.gallery import Card, card_html

    card = Card("m", "d", "s", "p", 7, "d/s/00/p00/s0", Path("x.png"), Path("y.png"), None, {"clip_t": 0.5})
    scores = {
        seed: card_html(card, Path("."), lambda path, size: "t.jpg", seed).split('class="scores">')[1]
        for seed in (3, 7)
    }
    assert scores[3].startswith("seed 7 · clip_t 0.500") and scores[7].startswith("clip_t 0.500")  # preset=paper
