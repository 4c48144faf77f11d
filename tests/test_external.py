"""External methods: FreeGraftor's driver run by a second interpreter (its own venv, without this
project) against fake checkouts of both upstream APIs; job file round trip, presets, no-subject
policy, crash, timeout and a killed harness; FreeGraftor's row in Table 1."""

import ast
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import compose_config
from helpers import image_bytes
from monkey.baselines.external.process import ExternalProcessError
from monkey.eval.report import paper_table_path
from monkey.eval.tables import DEFAULT_PAPER_METRICS, paper_comparison, read_paper_table, table1_frame
from omegaconf import OmegaConf
from PIL import Image

from monkey.errors import ConfigError
from monkey.hashing import stable_hash
from monkey.methods.base import build_method
from monkey.methods.presets import method_spec
from monkey.models.profiles import Runtime, profile_from_config, resolve_runtime
from monkey.runner import generate_stage, generation_config, plan_from_config
from monkey.store import RunStore

FAKES = Path(__file__).parent / "fake_freegraftor"
API_FILES = {
    "af8c190": "pipeline_af8c190.py",
    "2025-10-24": "pipeline_2025_10_24.py",
    "paper-fork": "pipeline_paper_fork.py",
}
COMMIT = "af8c190" + "0" * 33
PLAN = ("plan.limit.subjects=2", "plan.limit.prompts=2")


@pytest.fixture(scope="session")
def foreign_python(tmp_path_factory) -> Path:
    """A second interpreter in a venv of its own: standard library only, monkey-bench not importable."""
    root = tmp_path_factory.mktemp("foreign-venv")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = subprocess.run([python, "-c", "import monkey"], capture_output=True, text=True, cwd=root, env=env)
    assert probe.returncode != 0 and "No module named 'monkey'" in probe.stderr
    return python


def make_checkout(root: Path, api: str) -> Path:
    checkout = root / f"FreeGraftor-{api}"
    (checkout / "src").mkdir(parents=True)
    shutil.copy(FAKES / API_FILES[api], checkout / "src" / "pipeline.py")
    for name in ("fake_upstream.py", "torch.py"):
        shutil.copy(FAKES / name, checkout / "src" / name)
    shutil.copytree(FAKES / "PIL", checkout / "src" / "PIL")  # the fork's driver path opens the subject image
    (checkout / ".git").mkdir()
    (checkout / ".git" / "HEAD").write_text(COMMIT + "\n")
    for name in ("FLUX.1-dev", "grounding-dino-tiny"):
        (root / name).mkdir(exist_ok=True)
    (root / "sam_vit_h.pth").write_bytes(b"weights")
    return checkout


def freegraftor(checkout: Path, python: Path, *extra: str) -> tuple[str, ...]:
    root = checkout.parent
    return (
        "method=freegraftor",
        f"method.environment.checkout={checkout}",
        f"method.environment.python={python}",
        f"method.environment.flux_dev={root / 'FLUX.1-dev'}",
        f"method.environment.grounding_dino={root / 'grounding-dino-tiny'}",
        f"method.environment.sam={root / 'sam_vit_h.pth'}",
        *PLAN,
        *extra,
    )


def control(checkout: Path, **rules) -> None:
    (checkout / "fake_control.json").write_text(json.dumps(rules))


def calls(checkout: Path) -> list[dict]:
    path = checkout / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def fake_colour(prompt: str, seed: int, width: int, height: int) -> tuple[int, int, int]:
    """Written out independently of tests/fake_freegraftor/fake_upstream.py."""
    digest = hashlib.sha256(f"{prompt}|{seed}|{width}x{height}".encode()).digest()
    return digest[0], digest[1], digest[2]


def ok_rows(run_dir: Path) -> list[dict]:
    """Every ok row of every manifest line (not only the latest per item): duplicates show up here."""
    rows = []
    for path in (run_dir / "manifest").glob("*.jsonl"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return [row for row in rows if row["status"] == "ok"]


@pytest.mark.parametrize("api", list(API_FILES))
def test_every_api_round_trips_jobs_into_the_store(api, foreign_python, tmp_path, caplog):
    """At a non-square size (128 high, 192 wide): a driver that swapped width and height fails here."""
    checkout = make_checkout(tmp_path, api)
    cfg = compose_config(*freegraftor(checkout, foreign_python, "generation.height=128", "generation.width=192"))
    run_dir = tmp_path / "run"
    with caplog.at_level("INFO", logger="monkey.external"):
        summary = generate_stage(cfg, run_dir)
    assert (summary.generated, summary.failed) == (4, 0)
    assert f"FreeGraftor API {api}" in caplog.text  # the driver says which API it found
    assert "made 'backpack in the jungle'" in caplog.text  # upstream's stdout prints reach the log
    assert "driver exited with code 0" in caplog.text

    plan = plan_from_config(cfg)
    rows = {row["item_id"]: row for row in RunStore(run_dir).rows("freegraftor")}
    made = calls(checkout)
    assert [call["prompt"] for call in made] == [item.prompt for item in plan]
    for item, call in zip(plan, made, strict=True):
        row = rows[item.item_id]
        assert row["status"] == "ok" and row["image"] == item.image_relpath("freegraftor")
        assert row["prompt"] == item.prompt and row["generation_seed"] == item.seed
        assert row["info"]["external"] == {"status": "ok", "api": api, "commit": COMMIT, "flags": {"no_subject": []}}
        # what upstream received: fair preset = the plan's prompt as target and template, its seed and size
        assert call["api"] == api and call["template_prompt"] == item.prompt and call["class_name"] == "backpack"
        settings = call["settings"]
        assert (settings["seed"], settings["width"], settings["height"]) == (item.seed, 192, 128)
        assert settings["num_steps"] == 25 and settings["end_inject_step"] == 25
        assert settings["inject_block_ids"] == list(range(57)) and settings["inject_match_dropout"] == 0.2
        # no monkey, PIL or numpy over there; the fork takes an opened image (the stand-in PIL there)
        assert call["offload"] is False and call["modules"] == (["PIL", "PIL.Image"] if api == "paper-fork" else [])
        assert row["height"] == 128 and row["width"] == 192
        with Image.open(run_dir / row["image"]) as image:
            assert image.size == (192, 128)
            assert image.getpixel((5, 7)) == fake_colour(item.prompt, item.seed, 192, 128)
            assert image.text["prompt"] == item.prompt and image.text["seed"] == str(item.seed)
        with Image.open(run_dir / row["artifacts"]["mask"]) as mask:
            assert mask.getpixel((0, 0)) == 128  # a detected subject, no fallback
        # the subject image handed over is the harness's own normalised image
        with Image.open(call["image_path"]) as handed:
            assert handed.tobytes() == item.source.load_image().tobytes()
    jobs = (run_dir / "external" / "freegraftor" / "shard-000-of-001" / "jobs.jsonl").read_text().splitlines()
    assert [json.loads(line)["seed"] for line in jobs] == [item.seed for item in plan]


@pytest.mark.parametrize("api", ["af8c190", "paper-fork"])
def test_paper_preset_and_the_forks_whole_image_fallback(api, foreign_python, tmp_path):
    checkout = make_checkout(tmp_path, api)  # af8c190 itself would crash on the missing subject
    control(checkout, no_subject=[{"where": "reference", "contains": "backpack_dog"}])
    cfg = compose_config(*freegraftor(checkout, foreign_python, "preset=paper"))
    run_dir = tmp_path / "run"
    assert generate_stage(cfg, run_dir).generated == 4
    plan = plan_from_config(cfg)
    rows = {row["item_id"]: row for row in RunStore(run_dir).rows("freegraftor")}
    for item, call in zip(plan, calls(checkout), strict=True):
        location_only = item.location  # "in the jungle": the fork's target prompt
        assert call["prompt"] == location_only and call["template_prompt"] == item.source.class_name
        assert call["settings"]["seed"] == 123 and call["settings"]["num_steps"] == 20
        assert (call["settings"]["width"], call["settings"]["guidance"]) == (256, 3.0)
        row = rows[item.item_id]
        assert row["prompt"] == location_only and row["generation_seed"] == 123 and row["height"] == 256
        assert row["paper_clip_t_prompt"] == location_only
        flags = row["info"]["external"]["flags"]
        with Image.open(run_dir / row["artifacts"]["mask"]) as mask:
            whole = mask.getpixel((0, 0)) == 255
        if item.source.subject == "backpack_dog":
            assert flags == {"no_subject": ["reference"], "subject_fallback": "whole_image"} and whole
        else:
            assert flags == {"no_subject": []} and not whole


def test_no_subject_fails_the_item_and_a_rerun_retries_it(foreign_python, tmp_path):
    checkout = make_checkout(tmp_path, "2025-10-24")  # upstream would silently paste nothing
    control(checkout, no_subject=[{"where": "template", "contains": "snow"}])
    cfg = compose_config(*freegraftor(checkout, foreign_python))
    run_dir = tmp_path / "run"
    summary = generate_stage(cfg, run_dir)
    assert (summary.generated, summary.failed) == (2, 2)
    rows = RunStore(run_dir).rows("freegraftor")
    failed = [row for row in rows if row["status"] == "failed"]
    assert [row["location"] for row in failed] == ["in the snow", "in the snow"]
    for row in failed:
        assert row["error"] == "no_subject: Grounding DINO found no 'backpack' in the template image"
        assert row["info"]["external"]["flags"] == {"no_subject": ["template"]} and row["image"] is None
    plan = {item.item_id: item for item in plan_from_config(cfg)}
    for row in failed:  # no fallback image, no collage or mask for the failed items
        stem = plan[row["item_id"]].image_relpath("freegraftor").removesuffix(".png")
        assert not list(run_dir.glob(f"{stem}*"))
    assert len(image_bytes(run_dir)) == 2 * 3  # the two ok items with their collage and mask
    assert set(RunStore(run_dir).finished("freegraftor")) == {r["item_id"] for r in rows if r["status"] == "ok"}

    control(checkout)
    before = len(calls(checkout))
    summary = generate_stage(cfg, run_dir)
    assert (summary.skipped, summary.generated, summary.failed) == (2, 2, 0)
    assert [call["prompt"] for call in calls(checkout)[before:]] == ["backpack in the snow", "backpack dog in the snow"]
    assert len(RunStore(run_dir).finished("freegraftor")) == 4 and len(ok_rows(run_dir)) == 4


@pytest.mark.parametrize("fault", ["crash", "timeout"])
def test_crash_or_timeout_mid_batch_keeps_finished_items_and_the_rerun_does_the_rest(fault, foreign_python, tmp_path):
    checkout = make_checkout(tmp_path, "af8c190")
    reference = tmp_path / "reference"
    cfg = compose_config(*freegraftor(checkout, foreign_python, "method.environment.item_timeout_s=3"))
    generate_stage(cfg, reference)

    control(checkout, **{"crash_on" if fault == "crash" else "hang_on": ["backpack in the snow"]})
    first = len(calls(checkout))
    run_dir = tmp_path / "run"
    expected = "exited with code 3" if fault == "crash" else "no progress for 3 s"
    with pytest.raises(ExternalProcessError, match=expected):
        generate_stage(cfg, run_dir)
    stuck_pid = calls(checkout)[-1]["pid"]
    assert not pid_alive(stuck_pid)  # the hanging child's group was killed
    rows = RunStore(run_dir).rows("freegraftor")
    assert [row["status"] for row in rows] == ["ok", "failed", "failed", "failed"]
    assert expected in rows[1]["error"] and rows[1]["error"].startswith("not made:")

    control(checkout)
    before = len(calls(checkout))
    summary = generate_stage(cfg, run_dir)
    assert (summary.skipped, summary.generated) == (1, 3)
    assert [call["prompt"] for call in calls(checkout)[before:]] == [
        "backpack in the snow",
        "backpack dog in the jungle",
        "backpack dog in the snow",
    ]
    assert len(ok_rows(run_dir)) == 4 and before - first == 2  # nothing duplicated
    assert image_bytes(run_dir) == image_bytes(reference)


def test_results_left_in_the_exchange_folder_are_taken_only_for_the_same_job(foreign_python, tmp_path):
    """The harness died after the driver wrote some answers but before it stored them: the rerun takes
    every answer made for the very same job line and redoes the one whose echo differs."""
    checkout = make_checkout(tmp_path, "af8c190")
    cfg = compose_config(*freegraftor(checkout, foreign_python))
    run_dir = tmp_path / "run"
    generate_stage(cfg, run_dir)
    shutil.rmtree(run_dir / "manifest")
    shutil.rmtree(run_dir / "images")
    out = run_dir / "external" / "freegraftor" / "shard-000-of-001" / "out"
    stale = sorted(out.glob("*.json"))[1]
    answer = json.loads(stale.read_text())
    answer["job"]["seed"] += 1  # made for another seed
    stale.write_text(json.dumps(answer))
    before = len(calls(checkout))
    assert generate_stage(cfg, run_dir).generated == 4
    assert [call["prompt"] for call in calls(checkout)[before:]] == [answer["job"]["prompt"]]
    resumed = [row["info"]["external"].get("resumed_from_exchange", False) for row in RunStore(run_dir).rows()]
    assert sorted(resumed) == [False, True, True, True]


def test_an_error_while_storing_stops_the_child_at_once(foreign_python, tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path, "af8c190")
    control(checkout, sleep_s=1.5)
    original, written = RunStore.write_image, []

    def disk_full_on_the_second_image(self, relpath, image, text=None):
        written.append(relpath)
        if len(written) == 2:
            raise OSError("No space left on device")
        original(self, relpath, image, text)

    monkeypatch.setattr(RunStore, "write_image", disk_full_on_the_second_image)
    with pytest.raises(OSError, match="No space") as raised:
        generate_stage(compose_config(*freegraftor(checkout, foreign_python)), tmp_path / "run")
    # while the error (and its traceback, which holds the runner's frames) is still around, as in a
    # caller that logs it and carries on, the child must already be gone, not running its next item
    assert raised.traceback and not pid_alive(calls(checkout)[-1]["pid"], wait_s=1.0)


def pid_alive(pid: int, wait_s: float = 10.0) -> bool:
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True


def test_killed_harness_kills_the_child_and_the_rerun_resumes(foreign_python, tmp_path):
    checkout = make_checkout(tmp_path, "2025-10-24")
    control(checkout, sleep_s=0.4)
    overrides = freegraftor(checkout, foreign_python, "plan.limit.prompts=3")
    run_dir = tmp_path / "run"
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from conftest import compose_config; "
        "from monkey.runner import generate_stage; generate_stage(compose_config(*sys.argv[3:]), sys.argv[2])"
    )
    log = tmp_path / "harness.log"
    with log.open("wb") as handle:
        harness = subprocess.Popen(
            [sys.executable, "-c", script, str(Path(__file__).parent), str(run_dir), *overrides],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.time() + 120
    while time.time() < deadline and harness.poll() is None and len(ok_rows(run_dir)) < 2:
        time.sleep(0.05)
    harness.send_signal(signal.SIGKILL)
    harness.wait()
    control(checkout, sleep_s=60)  # an orphaned driver would now sit in its next item
    assert 2 <= len(ok_rows(run_dir)) < 6, log.read_text()
    assert not pid_alive(calls(checkout)[-1]["pid"])  # the driver saw its stdin close and ended its group
    stored = {row["item_id"] for row in ok_rows(run_dir)}
    called_before = [call["prompt"] for call in calls(checkout)]

    control(checkout)
    cfg = compose_config(*overrides)
    summary = generate_stage(cfg, run_dir)
    assert summary.skipped == len(stored) and summary.generated == 6 - len(stored)
    rows = ok_rows(run_dir)
    assert len(rows) == 6 and len({row["item_id"] for row in rows}) == 6  # each item once
    again = [call["prompt"] for call in calls(checkout)[len(called_before) :]]
    plan = {item.item_id: item.prompt for item in plan_from_config(cfg)}
    assert not {plan[item_id] for item_id in stored} & set(again)  # stored items are never redone
    assert len(again) + len(called_before) <= 7  # at most the item in flight at the kill twice
    resumed = [
        row for row in RunStore(run_dir).rows("freegraftor") if row["info"]["external"].get("resumed_from_exchange")
    ]
    assert {row["prompt"] for row in resumed} == set(called_before) - set(again) - {plan[i] for i in stored}


def test_unset_checkout_is_one_clear_line(tmp_path, monkeypatch):
    """In-process (the CLI turns every MonkeyError into its line and exit 2; tests/test_cli.py checks that)."""
    for variable in ("FREEGRAFTOR_CHECKOUT", "FREEGRAFTOR_PYTHON", "FLUX_DEV", "GROUNDING_DINO", "SAM"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError) as raised:
        generate_stage(compose_config("method=freegraftor", *PLAN), tmp_path / "run")
    (line,) = str(raised.value).splitlines()
    for key in ("checkout", "python", "flux_dev", "grounding_dino", "sam"):
        assert f"method.environment.{key}=..." in line
    assert not (tmp_path / "run" / "external").exists() and not (tmp_path / "run" / "images").exists()


def test_sizes_flux_cannot_make_are_refused(foreign_python, tmp_path):
    checkout = make_checkout(tmp_path, "af8c190")
    cfg = compose_config(*freegraftor(checkout, foreign_python, "generation.height=120", "generation.width=120"))
    with pytest.raises(ConfigError, match="120x120 is not a multiple of 16"):
        generate_stage(cfg, tmp_path / "run")
    assert calls(checkout) == []
    assert not [p for p in (tmp_path / "run").rglob("*")]  # a refused run writes nothing (no manifest, no config)


def test_runtime_speedups_are_refused_for_a_method_in_its_own_process(foreign_python, tmp_path):
    checkout = make_checkout(tmp_path, "af8c190")
    cfg = compose_config(*freegraftor(checkout, foreign_python, "runtime.sdpa_backend=math"))
    with pytest.raises(ConfigError, match=r"runtime speed-ups \{'sdpa_backend': 'math'\} .* its own process"):
        generate_stage(cfg, tmp_path / "run")
    assert calls(checkout) == [] and not (tmp_path / "run" / "images").exists()


def test_freegraftor_fills_the_papers_freegraftor_row():
    names = dict(compose_config().eval.report.paper_names)
    summary = pd.DataFrame(
        [
            dict(variant=v, method=v, dataset="dreambooth", metric=m, level="image", n=4, mean=x, ci_low=x, ci_high=x)
            for v, values in {"freegraftor": (0.25, 0.45, 0.66, 0.40), "monkey": (0.31, 0.52, 0.74, 0.50)}.items()
            for m, x in zip(("clip_t", "dino", "clip_i", "dino_v1"), values, strict=True)
        ]
    )
    assert "freegraftor" in table1_frame(summary, ["clip_t", "dino", "clip_i"], ["dreambooth"], []).index
    paper = read_paper_table(paper_table_path(None))
    comparison = paper_comparison(summary, paper, names, DEFAULT_PAPER_METRICS).set_index(["paper_method", "metric"])
    row = comparison.loc[("FreeGraftor", "dino_v1")]  # the paper's DINO came from DINO v1 ViT-S/16
    assert row["variant"] == "freegraftor" and row["ours"] == 0.40
    assert row["diff"] == pytest.approx(0.40 - 0.471)  # the paper's DreamBooth DINO for FreeGraftor


def test_where_it_runs_is_neither_in_the_config_hash_nor_in_the_folder_name(foreign_python, tmp_path):
    """Moving the checkout, the weights or the Python changes no image: same hash, same run folder."""
    configs = [compose_config(*freegraftor(make_checkout(tmp_path / name, "af8c190"), foreign_python)) for name in "ab"]
    hashes = set()
    for cfg in configs:
        spec = method_spec(cfg)
        runtime = resolve_runtime(profile_from_config(spec.model), "cpu", "auto")
        hashes.add(stable_hash(generation_config(cfg, runtime, spec)))
    assert len(hashes) == 1 and configs[0].method.environment != configs[1].method.environment
    knob = compose_config(*freegraftor(make_checkout(tmp_path / "c", "af8c190"), foreign_python, "method.guidance=2.0"))
    spec = method_spec(knob)
    runtime = resolve_runtime(profile_from_config(spec.model), "cpu", "auto")
    assert stable_hash(generation_config(knob, runtime, spec)) not in hashes
    excluded = OmegaConf.load(Path(__file__).parents[1] / "conf" / "config.yaml").hydra.job.config.override_dirname
    assert {f"method.environment.{key}" for key in configs[0].method.environment} <= set(excluded.exclude_keys)


def test_the_child_sees_only_the_jobs_gpu(foreign_python, tmp_path, monkeypatch):
    """Under accelerate launch process r runs on cuda:<LOCAL_RANK>; FreeGraftor's code says plain "cuda"."""
    checkout = make_checkout(tmp_path, "af8c190")
    spec = method_spec(compose_config(*freegraftor(checkout, foreign_python)))
    profile = profile_from_config(spec.model)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    for device, expected in (("cuda:1", "5"), ("cuda", None), ("cpu", None)):
        runtime = Runtime(device=torch.device(device), dtype=torch.bfloat16, model=profile)
        method = build_method(spec.method, runtime, prompt_form=spec.prompt_form)
        env = method.command(tmp_path / "jobs.jsonl", tmp_path / "out").environment()
        assert env["CUDA_VISIBLE_DEVICES"] == (expected or "4,5")


# ---- the upstream APIs, pinned -------------------------------------------------------------------
SIGNATURES = json.loads((FAKES / "upstream_signatures.json").read_text())


def fake_signature(path: Path) -> dict[str, list[str]]:
    """Parameter and field names of a fake pipeline module, read from its source (never imported here)."""
    found: dict[str, list[str]] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == "FreeGraftorPipeline":
            for method in node.body:
                if isinstance(method, ast.FunctionDef) and method.name in ("__init__", "__call__"):
                    key = "init" if method.name == "__init__" else "call"
                    found[key] = [arg.arg for arg in method.args.args[1:]]
        elif isinstance(node, ast.ClassDef) and node.name in ("ConceptConfig", "GenerationConfig"):
            fields = [(n.target.id, n.value is not None) for n in node.body if isinstance(n, ast.AnnAssign)]
            if node.name == "ConceptConfig":
                found["concept_required"] = [name for name, has_default in fields if not has_default]
            else:
                found["generation_config"] = [name for name, _ in fields]
    return found


@pytest.mark.parametrize("api", list(API_FILES))
def test_each_fake_and_the_driver_have_exactly_the_pinned_upstream_signature(api):
    from monkey.baselines.freegraftor import driver

    pinned = {key: value for key, value in SIGNATURES[api].items() if key != "source"}
    assert fake_signature(FAKES / API_FILES[api]) == pinned
    assert list(driver.CALL_PARAMETERS[api]) == pinned["call"]
    assert list(driver.CONCEPT_REQUIRED[api]) == pinned["concept_required"]
    if "generation_config" in pinned:
        assert list(driver.GENERATION_KEYS) == pinned["generation_config"]
    assert set(driver.CALL_PARAMETERS) == set(API_FILES) == set(SIGNATURES) - {"_about"}


def test_any_other_signature_is_refused_at_start_with_one_line_naming_it(foreign_python, tmp_path):
    """The fork with one parameter more than its pinned signature: no item is attempted."""
    checkout = make_checkout(tmp_path, "paper-fork")
    pipeline = checkout / "src" / "pipeline.py"
    pipeline.write_text(pipeline.read_text().replace("info=None, callback=None)", "info=None, callback=None, x=1)"))
    with pytest.raises(ExternalProcessError) as raised:
        generate_stage(compose_config(*freegraftor(checkout, foreign_python)), tmp_path / "run")
    (line,) = str(raised.value).splitlines()
    assert "unsupported FreeGraftor API" in line and "info, callback, x), ConceptConfig(class_name, image)" in line
    assert "stopped after 0 of 4 items" in line and calls(checkout) == []


def test_an_image_upstream_returns_with_sides_swapped_fails_its_item(foreign_python, tmp_path):
    """Upstream's final decode swaps width and height (see driver.py): such an image is never stored."""
    checkout = make_checkout(tmp_path, "2025-10-24")
    control(checkout, swap_output=True)
    cfg = compose_config(*freegraftor(checkout, foreign_python, "generation.height=128", "generation.width=192"))
    summary = generate_stage(cfg, tmp_path / "run")
    assert (summary.generated, summary.failed) == (0, 4)
    for row in RunStore(tmp_path / "run").rows("freegraftor"):
        assert row["image"] is None and "returned a 128x192 (width x height) image for 192x128" in row["error"]


def test_a_python_older_than_3_10_is_one_clear_line(foreign_python, tmp_path):
    checkout = make_checkout(tmp_path, "af8c190")
    old = tmp_path / "python3.8"
    old.write_text("#!/bin/sh\necho 3 8\n")
    old.chmod(0o755)
    with pytest.raises(ConfigError) as raised:
        generate_stage(compose_config(*freegraftor(checkout, old)), tmp_path / "run")
    (line,) = str(raised.value).splitlines()
    assert f"method.environment.python='{old}' is Python 3.8; the FreeGraftor driver needs 3.10+" in line
    assert not (tmp_path / "run" / "external").exists()


def test_the_child_gets_no_path_into_the_harnesss_virtual_environment(monkeypatch, tmp_path):
    from monkey.baselines.external.process import Command, without_harness_prefix

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    libs = venv / "lib" / "site-packages" / "nvidia" / "cudnn" / "lib"
    path = os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin"])
    ld = os.pathsep.join([str(libs), "/opt/cuda/lib64"])
    assert without_harness_prefix(path, str(venv)) == os.pathsep.join(["/usr/local/bin", "/usr/bin"])
    assert without_harness_prefix(ld, str(venv)) == "/opt/cuda/lib64"
    assert without_harness_prefix(path, None) == path  # not in a venv: nothing to drop
    # and the real thing: the suite runs in a venv, whose bin/ is on PATH
    assert sys.prefix != sys.base_prefix
    harness_bin = os.path.join(sys.prefix, "bin")
    monkeypatch.setenv("PATH", os.pathsep.join([harness_bin, "/usr/bin"]))
    monkeypatch.setenv("LD_LIBRARY_PATH", os.path.join(sys.prefix, "lib"))
    env = Command(argv=("x",), cwd=tmp_path, env={"EXTRA": "1"}).environment()
    assert env["PATH"] == "/usr/bin" and env["LD_LIBRARY_PATH"] == "" and env["EXTRA"] == "1"
    # a PATH the user sets for the method (method.environment.env) is theirs
    assert Command(argv=("x",), cwd=tmp_path, env={"PATH": harness_bin}).environment()["PATH"] == harness_bin
