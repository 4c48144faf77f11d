"""Sweep reports: a real multirun's report has one row per variant and dataset with its parameter value,
its plots draw the means and intervals computed independently from the per-image scores, a categorical
sweep keeps its launch order, and a --sweep key that does not vary stops with one clear error."""

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from helpers import QUICK
from monkey.eval.aggregate import summarize
from monkey.eval.cli import main as report_main
from monkey.eval.sweep import SweepKeyError, build_sweep, format_value, interval_cell, write_sweep
from monkey.eval.sweep_plots import metric_figure
from omegaconf import OmegaConf
from test_cli import run_cli

from monkey.hashing import to_plain

METRICS = ("clip_t", "dino", "clip_i")
SCALES = (0.0, 0.5, 1.0)


def settings() -> dict:
    return to_plain(compose_config("eval=tiny").eval.report)


def artist(ax, gid: str):
    found = [a for a in [*ax.lines, *ax.collections] if a.get_gid() == gid]
    assert len(found) == 1, (gid, [a.get_gid() for a in [*ax.lines, *ax.collections]])
    return found[0]


@pytest.fixture(scope="module")
def scale_sweep(tmp_path_factory):
    """`monkey-bench method=ip_adapter_1.0 method.scale=0.0,0.5,1.0`: 3 jobs, 2 subjects x 1 prompt, 64 px,
    generated, scored and reported by the multirun's end-of-sweep callback."""
    root = tmp_path_factory.mktemp("sweep")
    scales = "method.scale=" + ",".join(map(str, SCALES))
    result = run_cli(root, "method=ip_adapter_1.0", scales, "plan.limit.subjects=2", "plan.limit.prompts=1", *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "runs" / "demo"


def test_scale_sweep_report_rows_values_and_plots_match_the_scores(scale_sweep):
    report = scale_sweep / "report"
    scores = pd.read_csv(report / "scores.csv")
    summary = pd.read_csv(report / "summary.csv")
    table = pd.read_csv(report / "sweep.csv")

    # one row per variant and dataset, ordered along the scale; the oracle is a reference row, not a point
    points = table[table["role"] == "sweep"]
    assert points["dataset"].tolist() == ["dreambooth"] * 3
    assert points["method.scale"].tolist() == list(SCALES)
    assert (points["n"] == 2).all()
    reference = table[table["role"] == "reference"]
    assert reference["variant"].tolist() == ["oracle"] and reference["method.scale"].isna().all()

    # means computed another way: group the per-image scores by the folders' resolved config value
    generated = scores[scores["method"] != "oracle"]
    expected = generated.groupby("cfg.method.scale")[list(METRICS)].mean()
    assert expected.index.tolist() == list(SCALES)
    assert np.ptp(expected["clip_t"]) > 1e-4  # the variants differ, so a mix-up would show
    for metric in METRICS:
        assert points[metric].to_numpy() == pytest.approx(expected[metric].to_numpy(), rel=1e-5)
    oracle_clip_t = scores.loc[scores["method"] == "oracle", "clip_t"].mean()

    # the figures: each point and band equals the mean and interval (read back from the drawn artists)
    sweep = build_sweep(scores, summary, settings())
    assert [p.key for p in sweep.parameters] == ["method.scale"] and sweep.parameters[0].numeric
    for metric in METRICS:
        fig = metric_figure(sweep, "dreambooth", metric, sweep.axes[0])
        ax = fig.axes[0]
        line = artist(ax, "mean:ip_adapter_1.0")
        assert line.get_xdata().tolist() == list(SCALES)
        assert np.asarray(line.get_ydata()) == pytest.approx(expected[metric].to_numpy(), rel=1e-5)
        band = artist(ax, "band:ip_adapter_1.0").get_paths()[0].vertices
        for scale in SCALES:
            variant = generated.loc[generated["cfg.method.scale"] == scale, "variant"].iloc[0]
            row = summary.set_index(["variant", "metric", "level"]).loc[(variant, metric, "image")]
            at_x = band[np.isclose(band[:, 0], scale), 1]
            assert min(at_x) == pytest.approx(row["ci_low"], rel=1e-5)
            assert max(at_x) == pytest.approx(row["ci_high"], rel=1e-5)
        if metric == "clip_t":  # the oracle has CLIP-T only (one photo per subject: no image reference)
            assert artist(ax, "line:oracle (reference)").get_ydata()[0] == pytest.approx(oracle_clip_t, rel=1e-5)

    names = {p.name for p in report.iterdir()}
    for metric in METRICS:
        assert {f"sweep_dreambooth_{metric}_vs_method.scale.{ext}" for ext in ("png", "pdf")} <= names
    assert "## Sweep" in (report / "report.md").read_text() and "sweep.md" in names


def test_named_sweep_key_and_errors(scale_sweep, tmp_path):
    # naming the key gives the same table; cfg.<key> (the scores.csv column) names it too
    out = tmp_path / "named"
    assert report_main([str(scale_sweep), "--no-evaluate", "--out", str(out), "--sweep", "cfg.method.scale"]) == 0
    assert (out / "sweep.csv").read_text() == (scale_sweep / "report" / "sweep.csv").read_text()

    scores = pd.read_csv(scale_sweep / "report" / "scores.csv")
    summary = pd.read_csv(scale_sweep / "report" / "summary.csv")
    with pytest.raises(
        SweepKeyError, match=r"method\.guidance_scale: it does not vary .* Keys that vary: method\.scale"
    ):
        build_sweep(scores, summary, settings(), ["method.guidance_scale"])
    with pytest.raises(SweepKeyError, match=r"method\.token: no run folder's config .* Keys that vary: method\.scale"):
        build_sweep(scores, summary, settings(), ["method.token"])
    # the CLI: one error line, exit 2, and nothing written
    refused = tmp_path / "refused"
    argv = [str(scale_sweep), "--no-evaluate", "--out", str(refused), "--sweep", "method.guidance_scale"]
    assert report_main(argv) == 2
    assert not refused.exists()


def hand_sweep(root, jobs: list[tuple[str, str | None, dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run folders as a multirun leaves them (.hydra config, overrides, job number) for jobs given as
    (method, override or None, method config), with per-image scores made by hand. Returns scores, summary."""
    rng = np.random.default_rng(0)
    frames = []
    for job, (method, override, method_config) in enumerate(jobs):
        folder = root / ",".join([method, *([override] if override else [])])
        hydra = folder / ".hydra" / "shard-0-of-1"
        hydra.mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"method": {"name": method, **method_config}}), hydra / "config.yaml")
        overrides = [f"method={method}", *([override] if override else [])]
        OmegaConf.save(OmegaConf.create(overrides), hydra / "overrides.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": {"job": {"num": job}}}), hydra / "hydra.yaml")
        frame = pd.DataFrame(
            {"subject": ["a", "a", "b", "b", "c"], "clip_t": rng.uniform(0.2, 0.4, 5) + 0.05 * job, "dino": np.nan}
        )
        label = f"{method} ({override})" if override else method
        frames.append(frame.assign(run_dir=str(folder), variant=label, method=method, dataset="dreambooth"))
    scores = pd.concat(frames, ignore_index=True)
    return scores, summarize(scores, ["clip_t", "dino"], samples=200)


def variant_mean(scores: pd.DataFrame, variant: str) -> float:
    return scores.loc[scores["variant"] == variant, "clip_t"].mean()


def test_categorical_sweep_keeps_the_launch_order_and_draws_error_bars(tmp_path):
    """`method.mask_steps=[2,3,4],[2],[2,3]` launched in that order (jobs 0-2), beside text_only."""
    steps = ([2, 3, 4], [2], [2, 3])
    overrides = [f"method.mask_steps=[{','.join(map(str, value))}]" for value in steps]
    jobs = [("monkey", o, {"token": 1, "mask_steps": v}) for o, v in zip(overrides, steps, strict=True)]
    scores, summary = hand_sweep(tmp_path, [*jobs, ("text_only", None, {"scale": 0.0})])
    sweep = build_sweep(scores, summary, settings())

    parameter = sweep.parameters[0]
    assert parameter.key == "method.mask_steps" and not parameter.numeric and sweep.axes == [[parameter]]
    assert parameter.labels == ["[2, 3, 4]", "[2]", "[2, 3]"]  # the sweep's order, not sorted
    assert sweep.table["role"].tolist() == ["sweep"] * 3 + ["reference"]
    assert sweep.table["method.mask_steps"].tolist()[:3] == parameter.labels

    ax = metric_figure(sweep, "dreambooth", "clip_t", [parameter]).axes[0]
    points = artist(ax, "mean:monkey")
    assert points.get_xdata().tolist() == [0, 1, 2]
    means = [variant_mean(scores, f"monkey ({o})") for o in overrides]
    assert np.asarray(points.get_ydata()) == pytest.approx(means)
    bars = np.array([segment[:, 1] for segment in artist(ax, "interval:monkey").get_segments()])  # [3, (low, high)]
    by_variant = summary.set_index(["variant", "metric", "level"])
    intervals = [by_variant.loc[(f"monkey ({o})", "clip_t", "image"), ["ci_low", "ci_high"]] for o in overrides]
    assert bars == pytest.approx(np.array(intervals, dtype=float))
    assert [t.get_text() for t in ax.get_xticklabels()] == parameter.labels
    text_only = scores.loc[scores["method"] == "text_only", "clip_t"].mean()
    assert artist(ax, "line:text_only (reference)").get_ydata()[0] == pytest.approx(text_only)
    assert metric_figure(sweep, "dreambooth", "dino", [parameter]) is None  # no sweep point has the metric


def test_scales_of_two_methods_share_one_axis(tmp_path):
    """sweep_ip_scale and sweep_monkey_scale in one experiment folder: the plain adapter sweeps
    method.scale, MONKEY method.ip_scale; both curves go on one plot, each at its own values."""
    ip = [("ip_adapter", f"method.scale={v}", {"scale": v}) for v in (1.0, 0.0, 0.5)]
    monkey = [("monkey", f"method.ip_scale={v}", {"ip_scale": v, "token": 1}) for v in (0.5, 1.0)]
    scores, summary = hand_sweep(tmp_path, [*ip, *monkey])
    sweep = build_sweep(scores, summary, settings())
    assert [[p.key for p in axis] for axis in sweep.axes] == [["method.scale", "method.ip_scale"]]
    table = sweep.table
    assert table["method.scale"].tolist()[:3] == [0.0, 0.5, 1.0] and table["method.ip_scale"][:3].isna().all()
    assert table["method.ip_scale"].tolist()[3:] == [0.5, 1.0] and table["method.scale"][3:].isna().all()

    ax = metric_figure(sweep, "dreambooth", "clip_t", sweep.axes[0]).axes[0]
    assert ax.get_xlabel() == "method.scale (ip_adapter) / method.ip_scale (monkey)"
    for method, key, values in (("ip_adapter", "scale", [0.0, 0.5, 1.0]), ("monkey", "ip_scale", [0.5, 1.0])):
        line = artist(ax, f"mean:{method}")
        assert line.get_xdata().tolist() == values
        means = [variant_mean(scores, f"{method} (method.{key}={v})") for v in values]
        assert np.asarray(line.get_ydata()) == pytest.approx(means)
    report = tmp_path / "report"
    report.mkdir()
    (report / "sweep_dreambooth_clip_t_vs_method.scale.png").write_bytes(b"from an earlier report")
    write_sweep(sweep, report)
    assert sorted(p.name for p in report.glob("sweep_*")) == [
        f"sweep_dreambooth_clip_t_vs_method.scale+method.ip_scale.{e}" for e in ("pdf", "png")
    ]


def test_parameter_values_read_well():
    layers = [
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
        "mid_block.attentions.0.transformer_blocks.0.attn2",
    ]
    assert format_value(layers[:1]) == "up_blocks.1.attentions.1"
    assert format_value(layers) == "up_blocks.1.attentions.1 + mid_block.attentions.0"
    assert format_value([2, 3]) == "[2, 3]"
    assert format_value(0.25) == "0.25" and format_value(1.0) == "1" and format_value("union") == "union"
    assert format_value(None) == "none" and format_value(True) == "true"


def test_an_interval_missing_for_one_subject_reads_n_a():
    """One subject: a mean but no bootstrap interval; the cell says n/a (as docs/evaluation.md), never nan."""
    assert interval_cell(0.5123, float("nan"), float("nan")) == "0.512 [n/a]"
    assert interval_cell(float("nan"), float("nan"), float("nan")) == "n/a"
    assert interval_cell(0.5, 0.25, 0.75) == "0.500 [0.250, 0.750]"
