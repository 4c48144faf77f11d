"""Provenance (issue 26, points 1, 2, 5): a row records the exact source image and weights it was made
from, resume refuses when either changed, `image` stays inside the run folder, and malformed rows or
score files are skipped with file:line and the field in every stage.

One tiny folder-dataset run (one subject, one image) is shared by the module; its tiny checkpoints live in
a private MONKEY_CACHE, so a test may change a weight file without touching other modules' cache.

Planted bugs and the test that caught each (see the report of issue 26):
- check_inputs compared the recorded hash with itself (`now = recorded`): test_a_replaced_source_photo_is_refused
- weights_change skipped the file digests of local checkpoints: test_a_changed_tiny_weight_file_is_refused
- the file lists kept before the weights check (a refused run left a file): test_a_changed_tiny_weight_file_...
- changed_files listed every file, not the changed ones: test_a_changed_tiny_weight_file_is_refused
- load_ip_adapter no longer got `revision`: test_a_pinned_revision_reaches_from_pretrained_and_load_ip_adapter
- hub_snapshot took the folder before `snapshots` instead of after it: test_a_hub_snapshot_is_read_...
- image_problem without the resolve() check (a symlink out of the folder passed): test_malformed_rows_...
- the reader's row check skipped (rows() sorted 'yesterday' against floats: TypeError): test_malformed_rows_...
- read_record without the record_problem check (TypeError in the report's tables): test_malformed_rows_...
- link_outside flagged every symlink, also those inside the root: test_a_subject_folder_linked_out_of_...
- mixed_devices needed three devices to speak: test_the_report_names_folders_that_mix_devices
- evaluate_run without check_inputs: test_evaluate_refuses_a_source_photo_changed_since_its_image_was_made
"""

import hashlib
import json
import logging
import shutil
import warnings
from pathlib import Path

import pytest
from helpers import QUICK

from monkey.cli import run_job
from monkey.errors import RunFolderError
from monkey.paths import bundled_dreambooth_root
from monkey.runner import generate_stage
from monkey.store import RunStore

SHARED = ("plan.limit.prompts=1", "generation.batch_size=1", "run.stages=[generate]", *QUICK)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(dataset root, run folder, config overrides): one image of subject `dog` from its photo."""
    from monkey.models.tiny import materialize_tiny

    base = tmp_path_factory.mktemp("provenance")
    shared = materialize_tiny("lcm", 0).pipeline.parent  # the session's tiny checkpoints, copied (not rewritten)
    shutil.copytree(shared, base / "cache" / "tiny" / shared.name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MONKEY_CACHE", str(base / "cache"))
        root = base / "data"
        (root / "dog").mkdir(parents=True)
        shutil.copy(bundled_dreambooth_root() / "dataset" / "dog" / "00.jpg", root / "dog" / "00.jpg")
        overrides = ("dataset=folder", f"dataset.root={root}", *SHARED)
        run_dir = base / "runs" / "default" / "ip_adapter_1.0"
        from conftest import compose_config

        assert generate_stage(compose_config(*overrides), run_dir).generated == 1
        yield root, run_dir, overrides


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_row_records_its_source_bytes_weights_and_device(made):
    root, run_dir, _ = made
    (row,) = RunStore(run_dir).rows()
    assert row["source_sha256"] == sha256(root / "dog" / "00.jpg")
    assert row["device"] == "cpu"
    assert set(row["weights"]) == {"base", "adapter", "image_encoder"}
    adapter = row["weights"]["adapter"]
    kept = json.loads((run_dir / "configs" / f"weights-{adapter['files']}.json").read_text())
    assert kept == {Path(adapter["source"]).name: sha256(Path(adapter["source"]))}
    base = row["weights"]["base"]
    listed = json.loads((run_dir / "configs" / f"weights-{base['files']}.json").read_text())
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert listed[unet] == sha256(Path(base["source"]) / unet)


def test_a_replaced_source_photo_is_refused(made, make_config, caplog):
    root, run_dir, overrides = made
    photo = root / "dog" / "00.jpg"
    original = photo.read_bytes()
    manifest = {p: p.read_bytes() for p in RunStore(run_dir).manifest_files()}
    photo.write_bytes((bundled_dreambooth_root() / "dataset" / "cat" / "00.jpg").read_bytes())
    try:
        cfg = make_config(*overrides, "plan.limit.prompts=2")
        with caplog.at_level(logging.ERROR):
            assert run_job(cfg, run_dir) == 2
    finally:
        photo.write_bytes(original)
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"source image {photo} changed" in error and "\n" not in error
    assert {p: p.read_bytes() for p in RunStore(run_dir).manifest_files()} == manifest  # nothing added


def test_a_changed_tiny_weight_file_is_refused(made, make_config):
    _, run_dir, overrides = made
    (row,) = RunStore(run_dir).rows()
    weight = Path(row["weights"]["base"]["source"]) / "unet" / "diffusion_pytorch_model.safetensors"
    original = weight.read_bytes()
    weight.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit of the UNet's weights
    configs = sorted(p.name for p in (run_dir / "configs").iterdir())
    try:
        with pytest.raises(RunFolderError) as refused:
            generate_stage(make_config(*overrides, "plan.limit.prompts=2"), run_dir)
    finally:
        weight.write_bytes(original)
    changed = f"base weights in {weight.parents[1]}: unet/diffusion_pytorch_model.safetensors changed"
    assert changed in str(refused.value)
    assert sorted(p.name for p in (run_dir / "configs").iterdir()) == configs  # a refused run keeps no file list


def test_a_changed_controlnet_is_refused_like_the_base_weights(made, make_config, tmp_path):
    """method.control's ControlNet is one of the row's weights: its files' digest is recorded, and a resume
    after one bit of it changed is refused, naming the file (before, only info.control held its identity)."""
    from monkey.controlnet.tiny import materialize_tiny_controlnet

    _, _, overrides = made
    controlnet = tmp_path / "controlnet"
    shutil.copytree(materialize_tiny_controlnet("lcm", 0), controlnet)  # a copy: the shared twin stays intact
    controlled = (*overrides, "+control=canny", f"method.control.model={controlnet}")
    run_dir = tmp_path / "run"
    assert generate_stage(make_config(*controlled), run_dir).generated == 1
    (row,) = RunStore(run_dir).rows()
    assert row["weights"]["controlnet"]["source"] == str(controlnet) and row["weights"]["controlnet"]["files"]
    weight = controlnet / "diffusion_pytorch_model.safetensors"
    original = weight.read_bytes()
    weight.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(RunFolderError) as refused:
        generate_stage(make_config(*controlled, "plan.limit.prompts=2"), run_dir)
    assert f"controlnet weights in {controlnet}: diffusion_pytorch_model.safetensors changed" in str(refused.value)


def test_a_pinned_revision_reaches_from_pretrained_and_load_ip_adapter(monkeypatch):
    import diffusers
    import torch

    from monkey.models.profiles import IPAdapterSpec, ModelProfile, load_pipeline

    calls = {}

    class SpyPipeline:
        unet = torch.nn.Identity()

        @staticmethod
        def _get_signature_keys(cls):  # as diffusers' pipelines: (component folders, plain options)
            return [], []

        @classmethod
        def from_pretrained(cls, path, **kwargs):
            calls["from_pretrained"] = (path, kwargs.get("revision"))
            return cls()

        def load_ip_adapter(self, repo, **kwargs):
            calls["load_ip_adapter"] = (repo, kwargs.get("revision"))

        def to(self, device):
            return self

        def set_progress_bar_config(self, **kwargs):
            pass

    monkeypatch.setattr(diffusers, "SpyPipeline", SpyPipeline, raising=False)
    adapter = IPAdapterSpec(repo="org/adapter", revision="feedbead")
    profile = ModelProfile("spy", "SpyPipeline", "org/base", revision="c0ffee", ip_adapter=adapter)
    load_pipeline(profile, torch.device("cpu"), torch.float32)
    assert calls == {"from_pretrained": ("org/base", "c0ffee"), "load_ip_adapter": ("org/adapter", "feedbead")}


def test_a_hub_snapshot_is_read_from_the_cache_at_the_pinned_revision(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from monkey.models.profiles import IPAdapterSpec, ModelProfile, profile_checkpoints

    repo = tmp_path / "models--org--base"
    for commit in ("1111aaaa", "2222bbbb"):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("2222bbbb")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    profile = ModelProfile("hub", "StableDiffusionPipeline", "org/base", ip_adapter=IPAdapterSpec("org/absent"))
    pinned = ModelProfile("hub", "StableDiffusionPipeline", "org/base", revision="1111aaaa")
    latest = {c.role: c.identity()[0] for c in profile_checkpoints(profile)}
    assert latest["base"] == {"source": "org/base", "revision": None, "snapshot": "2222bbbb"}
    assert latest["adapter"]["snapshot"] is None  # not in the cache: recorded as unresolved
    (base,) = profile_checkpoints(pinned)
    assert base.identity()[0]["snapshot"] == "1111aaaa"


def bad_rows(good: dict, run_dir: Path, outside: Path) -> list[tuple[dict | str, str]]:
    """(line, the field its warning must name): hand edits that once crashed a stage or were followed."""
    (run_dir / "escape").symlink_to(outside.parent, target_is_directory=True)
    return [
        ({**good, "created": "yesterday"}, "created"),  # a duplicated row: sorting by created crashed
        ({**good, "item_id": "x/p00/s0", "plan_index": "zero"}, "plan_index"),
        ({k: v for k, v in good.items() if k != "config_hash"} | {"item_id": "y/p00/s0"}, "config_hash"),
        ({**good, "item_id": "z/p00/s0", "image": str(outside)}, "image"),  # another run's PNG
        ({**good, "item_id": "w/p00/s0", "image": "../../../../etc/hostname"}, "image"),
        ({**good, "item_id": "v/p00/s0", "image": f"escape/{outside.name}"}, "image"),  # a link out
        ({**good, "item_id": "u/p00/s0", "status": "done"}, "status"),
        ({**good, "item_id": "t/p00/s0", "seed": 1.5}, "seed"),
        ({**good, "item_id": "s/p00/s0", "created": True}, "created"),
        ({**good, "item_id": "r/p00/s0", "method": "../m"}, "method"),
        ({**good, "item_id": "q/p00/s0", "artifacts": {"overlay": "/etc/passwd"}}, "artifacts.overlay"),
        ("[1, 2]", "not an object"),
    ]


def test_malformed_rows_are_skipped_with_file_line_and_field_in_every_stage(made, make_config, tmp_path, caplog):
    """Table-driven: every bad line through generate, evaluate and report in one run, exit 0, one warning each."""
    _, made_dir, overrides = made
    run_dir = tmp_path / "runs" / "default" / "ip_adapter_1.0"
    shutil.copytree(made_dir, run_dir)
    outside = tmp_path / "other" / "stolen.png"
    outside.parent.mkdir()
    shutil.copy(next((run_dir / "images").rglob("*.png")), outside)
    manifest = RunStore(run_dir).manifest_files()[0]
    good = json.loads(manifest.read_text().splitlines()[0])
    cases = bad_rows(good, run_dir, outside)
    with manifest.open("a") as handle:
        for line, _ in cases:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    score_file = run_dir / "scores" / "tiny" / "items" / "ip_adapter_1.0" / f"{good['item_id']}.json"
    score_file.parent.mkdir(parents=True)
    score_file.write_text("{")  # a truncated score record
    ghost = score_file.parent / "ghost.json"  # valid JSON, not a record, no manifest row rescores it
    ghost.write_text(json.dumps({"method": "ip_adapter_1.0", "item_id": "ghost", "scores": {"dino": "high"}}))
    stages = "run.stages=[generate,evaluate,report]"
    cfg = make_config(*overrides, stages, f"run.root={tmp_path / 'runs'}", "run.name=default", "eval=tiny")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        assert run_job(cfg, run_dir) == 0
    messages = {str(w.message) for w in caught}
    for number, (_, field) in enumerate(cases, start=2):
        named = [m for m in messages if m.startswith(f"{manifest}:{number}: not a manifest row")]
        assert named and all(field in m for m in named), (number, field, named)
    assert any(m.startswith(f"{score_file}:1: unreadable score file") for m in messages)
    assert any(m.startswith(f"{ghost}:1: not a score record (field scores.dino='high'") for m in messages)
    scored = json.loads(score_file.read_text())  # rescored: a record again
    assert scored["item_id"] == good["item_id"] and scored["source_sha256"] == good["source_sha256"]
    assert set(scored["reference_sha256"].values()) == {good["source_sha256"]}
    assert set(scored["backbone_weights"]) == set(scored["backbones"])
    report = (tmp_path / "runs" / "default" / "report" / "scores.csv").read_text().splitlines()
    assert len(report) == 1 + 2  # the one image and its oracle row: nothing followed out of the folder


def test_a_subject_folder_linked_out_of_the_root_is_warned_about_and_recorded(made, tmp_path, caplog):
    from omegaconf import OmegaConf

    from monkey.datasets.base import load_sources

    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    shutil.copytree(made[0] / "dog", elsewhere / "dog")
    (root / "cat").mkdir(parents=True)
    shutil.copy(made[0] / "dog" / "00.jpg", root / "cat" / "00.jpg")
    (root / "cat" / "01.jpg").symlink_to(elsewhere / "dog" / "00.jpg")  # an image linked out
    (root / "dog").symlink_to(elsewhere / "dog", target_is_directory=True)  # a subject folder linked out
    (root / "inside").symlink_to(root / "cat", target_is_directory=True)  # a link within the root: fine
    cfg = OmegaConf.create({"_target_": "monkey.datasets.folder.load_folder", "name": "folder", "root": str(root)})
    with caplog.at_level(logging.WARNING, logger="monkey.datasets.base"):
        sources = {s.source_id: s.describe().get("source_link_outside_root") for s in load_sources(cfg)}
    assert sources == {
        "folder/cat/00": None,
        "folder/cat/01": f"{root / 'cat' / '01.jpg'} -> {elsewhere / 'dog' / '00.jpg'}",
        "folder/dog/00": f"{root / 'dog'} -> {elsewhere / 'dog'}",
        "folder/inside/00": None,
        "folder/inside/01": f"{root / 'inside' / '01.jpg'} -> {elsewhere / 'dog' / '00.jpg'}",
    }
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3 and all("is a symlink out of the root" in m for m in warned)


def test_evaluate_refuses_a_source_photo_changed_since_its_image_was_made(made, make_config, tmp_path):
    from monkey.eval.scoring import evaluate_run

    root, run_dir, overrides = made
    photo = root / "dog" / "00.jpg"
    original = photo.read_bytes()
    photo.write_bytes(original + b"\0")
    try:
        with pytest.raises(RunFolderError, match=f"source image {photo} changed"):
            evaluate_run(run_dir, make_config(*overrides, "eval=tiny").eval)
    finally:
        photo.write_bytes(original)
    assert not (run_dir / "scores").exists()  # refused before anything was written


def test_evaluate_names_a_reference_image_that_is_not_a_file(made, make_config, tmp_path, monkeypatch):
    """Evaluation's hashes carry its own missing-file error (not resume's bare OSError)."""
    from monkey.eval import scoring

    _root, run_dir, overrides = made
    gone = tmp_path / "gone.jpg"
    found = scoring.reference_paths

    def with_a_gone_reference(*args):
        return {key: [*paths, str(gone)] for key, paths in found(*args).items()}

    monkeypatch.setattr(scoring, "reference_paths", with_a_gone_reference)
    with pytest.raises(RunFolderError) as refused:
        scoring.evaluate_run(run_dir, make_config(*overrides, "eval=tiny").eval)
    assert str(refused.value) == f"image file not found: {gone} (named by a manifest row or the dataset)"


def test_the_report_names_folders_that_mix_devices():
    import pandas as pd
    from monkey.eval.report import mixed_devices

    scores = pd.DataFrame(
        {
            "run": ["a", "a", "a", "b", "b", "a"],
            "method": ["m", "m", "m", "m", "m", "oracle"],
            "device": ["cpu", "cuda:0", "cuda:0", "cpu", None, None],
        }
    )
    assert mixed_devices(scores) == ["- `a` / `m`: 1 images on cpu, 2 images on cuda:0"]
    assert mixed_devices(scores.drop(columns="device")) == []


def test_one_file_hash_class_keeps_each_callers_missing_file_error(tmp_path):
    """FileHashes serves resume (no `missing`: reading the path raises, check_inputs tests existence
    first) and evaluation (`missing=image_missing`: a RunFolderError naming the image); both memoise per
    path, so a file rewritten within the process keeps its first hash."""
    from monkey.eval.scoring import image_missing

    from monkey.provenance import FileHashes

    photo = tmp_path / "a.png"
    photo.write_bytes(b"first")
    for hashes in (FileHashes(), FileHashes(missing=image_missing)):
        assert hashes(photo) == hashlib.sha256(b"first").hexdigest()
        photo.write_bytes(b"second")
        assert hashes(str(photo)) == hashlib.sha256(b"first").hexdigest()  # memoised by the path's text
        photo.write_bytes(b"first")
    gone = tmp_path / "gone.png"
    with pytest.raises(FileNotFoundError):
        FileHashes()(gone)
    with pytest.raises(RunFolderError) as refused:
        FileHashes(missing=image_missing)(gone)
    assert str(refused.value) == f"image file not found: {gone} (named by a manifest row or the dataset)"
    with pytest.raises(RunFolderError, match="image file not found"):
        FileHashes(missing=image_missing)(tmp_path)  # a folder is not a file either
