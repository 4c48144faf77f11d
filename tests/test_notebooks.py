"""The notebooks run in CI on a small demo-like run (2 methods incl. MONKEY, 2 subjects x 1 prompt, 64 px,
eval=tiny, stages generate/evaluate/report) and show what the run holds: Table 1 equal to the report's
table1.csv, one Pareto plot per plot of the report, the attention grid, every MONKEY item's saved mask."""

import io
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from monkey.eval.stages import report_experiment
from nbclient import NotebookClient

from monkey.stages import run_stages
from monkey.store import RunStore

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COMMON = (
    "plan.limit.subjects=2",
    "plan.limit.prompts=1",
    "generation.height=64",
    "generation.width=64",
    "run.stages=[generate,evaluate]",
)
SHORT = {  # the fewest steps each method's settings allow (MONKEY captures at steps 1 and 2)
    "ip_adapter_1.0": ("method.num_inference_steps=2",),
    "monkey": ("method.initial_steps=3", "method.final_steps=3", "method.ip_steps=[1,2]", "method.mask_steps=[1,2]"),
}

# the attention notebook at 64 px, 3 pass-1 steps, two layers (MONKEY's, to extract its mask, and the mid block)
SMALL_FIGURE = " ".join(
    [
        "generation.height=64",
        "generation.width=64",
        "method.initial_steps=3",
        "layers=[up_blocks.1.attentions.1,mid_block.attentions.0]",
    ]
)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """runs/demo with an ip_adapter_1.0 and a monkey run folder, scored, and its report (as the demo's)."""
    root = tmp_path_factory.mktemp("notebooks") / "runs"
    for method, knobs in SHORT.items():
        cfg = compose_config(f"method={method}", f"run.root={root}", *COMMON, *knobs)
        run_stages(cfg, root / "demo" / method)
    report_experiment(cfg, root / "demo")
    return root / "demo"


def execute(name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel started in notebooks/ (a cell error fails the test)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


def tagged(notebook: nbformat.NotebookNode, tag: str) -> list[dict]:
    (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return cell.outputs


def stdout(outputs: list[dict]) -> str:
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stdout")


def test_table1_notebook_shows_the_reports_table_and_plots(experiment, monkeypatch):
    notebook = execute("table1_figure2.ipynb", monkeypatch, MONKEY_RUN_DIR=str(experiment))
    report = experiment / "report"
    assert stdout(tagged(notebook, "table1-csv")) == (report / "table1.csv").read_text()
    assert pd.read_csv(report / "table1.csv")["variant"].tolist() == ["ip_adapter_1.0", "monkey", "oracle"]
    plots = [o for o in tagged(notebook, "figure2") if "image/png" in o.get("data", {})]
    assert len(plots) == len(list(report.glob("pareto_*.png"))) == 3  # CLIP-I, DINO, DINO v1 against CLIP-T


def test_attention_notebook_draws_the_grid_and_loads_monkeys_masks(experiment, monkeypatch):
    notebook = execute(
        "attention_maps.ipynb", monkeypatch, MONKEY_RUN_DIR=str(experiment), MONKEY_ATTENTION_OVERRIDES=SMALL_FIGURE
    )
    assert any("image/png" in o.get("data", {}) for o in tagged(notebook, "grid"))
    areas = pd.read_csv(io.StringIO(stdout(tagged(notebook, "mask-areas"))))
    rows = RunStore(experiment / "monkey").rows()
    assert areas["item_id"].tolist() == [row["item_id"] for row in rows] and len(rows) == 2
    assert areas["mask_area"].tolist() == [row["info"]["mask_area"] for row in rows]
    assert np.allclose(areas["mask_area"], areas["mask_png_mean"], atol=1e-4)


@pytest.mark.parametrize("name", ["table1_figure2.ipynb", "attention_maps.ipynb"])
def test_notebooks_are_kept_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
