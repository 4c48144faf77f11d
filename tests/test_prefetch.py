"""`monkey-data prefetch`: the hub needs of every profile, backbone and method component, the sweep's
jobs, and a fetch from a folder of tiny twins into a real hub-layout cache (read back by
huggingface_hub's own cache lookup).

Planted bugs each test caught (issue 27):
- `ModelProfile.needs` without the image encoder's subfolder prefix -> test_every_model_profile_is_covered
- `files_to_fetch` keeping the .bin beside a safetensors file -> test_prefetch_from_tiny_twins
- `sweep_jobs` dropping the experiment's sweeper params -> test_sweep_walks_every_method_and_preset
- `missing_components` not skipping folders the loader is told not to read -> test_pipeline_need_skips_unread_components
- the offline error naming only the first missing item -> test_prefetch_from_tiny_twins
"""

import json
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
from monkey.eval.backbones import backbone_specs
from omegaconf import OmegaConf

from monkey.datasets.cli import main as data_main
from monkey.hub_needs import HubNeed, files_to_fetch, missing_parts
from monkey.methods.presets import model_profile_config
from monkey.models.profiles import profile_from_config
from monkey.models.tiny import materialize_tiny
from monkey.prefetch import HubClient, all_needs, component_needs, sweep_jobs

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_every_model_profile_is_covered():
    """Every conf/model profile says what it reads: tiny ones nothing, real ones their pipeline repo and
    (where set) the adapter's weights and image encoder, at the paths load_ip_adapter reads."""
    for path in sorted((CONF / "model").glob("*.yaml")):
        profile = profile_from_config(model_profile_config(path.stem))
        needs = profile.needs()
        if profile.tiny:
            assert needs == [], path.name
            continue
        assert needs[0].repo_id == profile.pretrained and needs[0].components, path.name
        assert needs[0].revision == profile.revision
        if profile.ip_adapter is None:
            assert len(needs) == 1, path.name
            continue
        spec = profile.ip_adapter
        files = {name for need in needs[1:] for group in need.files for name in group}
        assert f"{spec.subfolder}/{spec.weight_name}" in files, path.name
        folder = spec.image_encoder_folder if "/" in spec.image_encoder_folder else f"{spec.subfolder}/image_encoder"
        assert f"{folder}/config.json" in files, path.name


def test_every_eval_backbone_is_covered():
    """Every backbone of every conf/eval set: tiny ones nothing, real ones the repo and file their library
    downloads (timm: hf_hub_id + model.safetensors; open_clip: its hf_hub entry)."""
    expected = {
        "vit_base_patch14_dinov2.lvd142m": "timm/vit_base_patch14_dinov2.lvd142m",
        "vit_small_patch16_224.dino": "timm/vit_small_patch16_224.dino",
        "ViT-B-32": "timm/vit_base_patch32_clip_224.openai",
        "ViT-L-14": "timm/vit_large_patch14_clip_224.openai",
    }
    for path in sorted((CONF / "eval").glob("*.yaml")):
        node = OmegaConf.load(path)
        base = OmegaConf.load(CONF / "eval" / "default.yaml") if "defaults" in node else OmegaConf.create()
        node.pop("defaults", None)
        merged = OmegaConf.to_container(OmegaConf.merge(base, node))
        for spec in backbone_specs(merged["backbones"]):
            needs = spec.needs()
            if spec.tiny is not None:
                assert needs == [], (path.name, spec.key)
                continue
            assert [n.repo_id for n in needs] == [expected[spec.model_name]], (path.name, spec.key)
            assert needs[0].files[0][0].endswith(".safetensors")


def test_every_pretrained_component_can_say_what_it_reads():
    """Every `_target_` block of conf/method that names `pretrained` (also inside `paper.set`) has a class
    with hub_needs; a class without one is refused rather than silently left out."""
    seen = 0
    for path in sorted((CONF / "method").glob("*.yaml")):
        plain = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for block in [plain, (plain.get("paper") or {}).get("set") or {}]:
            for key, value in block.items():
                if isinstance(value, dict) and "pretrained" in value:
                    seen += 1
                    value = {**value, "tiny": False}
                    needs = list(component_needs(value, f"method.{key}"))
                    assert [n.repo_id for n in needs] == [value["pretrained"]], (path.name, key)
    assert seen >= 3  # BLIP (masactrl paper), OWL-ViT and DINOv2 (rectifid)
    with pytest.raises(Exception, match="has no hub_needs"):
        list(component_needs({"c": {"_target_": "collections.OrderedDict", "pretrained": "x/y"}}, "method"))


def test_sweep_walks_every_method_and_preset():
    """paper_dreambooth: its sweeper params (method x preset) expanded, each job composed with its values."""
    jobs = sweep_jobs(["experiment=paper_dreambooth"])
    params = OmegaConf.load(CONF / "experiment" / "paper_dreambooth.yaml").hydra.sweeper.params
    methods = str(params.method).split(",")
    assert len(jobs) == len(methods) * 2
    assert {(j.cfg.method.name, j.cfg.preset) for j in jobs} == {(m, p) for m in methods for p in ("fair", "paper")}


def test_method_preset_changes_needs():
    """MasaCtrl's BLIP captioner is read only under preset=paper; its own SD v1.4 under both; no backbones
    without a scoring stage, the tiny eval set's none with one."""
    needs = all_needs(["model=lcm_dreamshaper", "method=masactrl", "preset=fair,paper", "run.stages=[generate]"])
    by_repo = {n.repo_id: n for n in needs}
    assert set(by_repo) == {"CompVis/stable-diffusion-v1-4", "Salesforce/blip-image-captioning-base"}
    assert by_repo["Salesforce/blip-image-captioning-base"].wanted_by == ("preset=paper",)
    assert len(by_repo["CompVis/stable-diffusion-v1-4"].wanted_by) == 2


def test_pipeline_need_skips_unread_components(tmp_path):
    """The safety checker (passed as None) is never fetched nor required, even when the repo has one."""
    profile = profile_from_config(model_profile_config("sd15"))
    need = profile.needs()[0]
    assert "safety_checker" in need.skip_components
    files = ["model_index.json", "unet/config.json", "unet/w.safetensors", "safety_checker/model.safetensors"]
    chosen, absent = files_to_fetch(need, files)
    assert absent == [] and "safety_checker/model.safetensors" not in chosen
    index = {"unet": ["diffusers", "UNet2DConditionModel"], "safety_checker": ["x", "StableDiffusionSafetyChecker"]}
    cache = write_cache(tmp_path, need.repo_id, {"model_index.json": json.dumps(index), "unet/w.safetensors": "w"})
    assert missing_parts(need, cache) == []


# --- a fetch from tiny twins -------------------------------------------------------------------


def write_cache(cache: Path, repo_id: str, files: dict[str, str | Path], revision: str = "main") -> str:
    """Files in the hub cache layout huggingface_hub reads: models--org--name/snapshots/<commit>/..."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    for name, content in files.items():
        target = repo / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_text(content)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return str(cache)


class FolderHub(HubClient):
    """The hub as a folder of repositories (<root>/<org>/<name>/...), downloading into `cache`."""

    def __init__(self, root: Path, cache: Path):
        self.root, self.cache, self.downloaded = root, cache, []

    def list_files(self, repo_id, revision):
        repo = self.root / repo_id
        return sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())

    def download(self, repo_id, revision, files):
        self.downloaded += [f"{repo_id}/{f}" for f in files]
        write_cache(self.cache, repo_id, {f: self.root / repo_id / f for f in files}, revision or "main")


@pytest.fixture
def twin_hub(tmp_path, monkeypatch):
    """lcm_dreamshaper's repos as tiny twins, plus files a loader never reads (a variant, a .bin beside
    its safetensors, a root checkpoint) that must not be fetched."""
    paths = materialize_tiny("lcm")
    hub = tmp_path / "hub"
    shutil.copytree(paths.pipeline, hub / "SimianLuo/LCM_Dreamshaper_v7")
    shutil.copytree(paths.ip_adapter, hub / "h94/IP-Adapter")
    adapter = hub / "h94/IP-Adapter/models"
    (adapter / "ip-adapter_sd15.safetensors").rename(adapter / "ip-adapter_sd15.bin")
    unet = hub / "SimianLuo/LCM_Dreamshaper_v7/unet"
    (unet / "diffusion_pytorch_model.fp16.safetensors").write_text("variant")
    (unet / "diffusion_pytorch_model.bin").write_text("old format")
    (hub / "SimianLuo/LCM_Dreamshaper_v7/LCM_Dreamshaper_v7.ckpt").write_text("single file")
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    client = FolderHub(hub, cache)
    monkeypatch.setattr("monkey.prefetch.HubClient", lambda: client)
    return client


def test_prefetch_from_tiny_twins(twin_hub, monkeypatch, capsys):
    overrides = ["model=lcm_dreamshaper", "method=ip_adapter_1.0", "run.stages=[generate]"]
    # offline, nothing cached: exit 2, one line per missing item, all three at once
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert data_main(["prefetch", *overrides]) == 2
    err = capsys.readouterr().err
    missing = [line for line in err.splitlines() if line.startswith("missing: ")]
    assert len(missing) == 3, err
    assert any("h94/IP-Adapter models/ip-adapter_sd15.bin" in line for line in missing)
    assert any("SimianLuo/LCM_Dreamshaper_v7 model_index.json" in line for line in missing)
    assert data_main(["prefetch", "--dry-run", *overrides]) == 1
    assert twin_hub.downloaded == []

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert data_main(["prefetch", *overrides]) == 0
    fetched = set(twin_hub.downloaded)
    assert "SimianLuo/LCM_Dreamshaper_v7/unet/diffusion_pytorch_model.safetensors" in fetched
    assert "h94/IP-Adapter/models/image_encoder/model.safetensors" in fetched
    assert not {f for f in fetched if f.endswith((".bin", ".ckpt")) and "ip-adapter_sd15" not in f}
    assert not {f for f in fetched if ".fp16." in f}
    repo = "SimianLuo/LCM_Dreamshaper_v7"
    repo_files = {f"{repo}/{f}" for f in twin_hub.list_files(repo, None)}
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert {f for f in repo_files if f"/{component}/" in f} & fetched, component

    # everything cached: offline dry-run and prefetch succeed without asking the hub again
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    assert data_main(["prefetch", "--dry-run", *overrides]) == 0
    assert "3 of 3 hub items in the local cache" in capsys.readouterr().out
    count = len(twin_hub.downloaded)
    assert data_main(["prefetch", *overrides]) == 0
    assert len(twin_hub.downloaded) == count


def test_need_line_names_repo_and_files():
    need = HubNeed("a/b", "thing", revision="v1", files=(("x.safetensors", "x.bin"),), wanted_by=("method=m",))
    assert need.line() == "a/b@v1  x.safetensors or x.bin  (thing) [method=m]"


def test_monkey_fetches_its_mask_sources_models_only_when_its_source_reads_them():
    """method.segmenter (CLIPSeg) and method.refine.auto_masks (SAM) sit in every MONKEY config; prefetch lists
    each only under the mask source that loads it, so an attention-mask run downloads neither."""
    from monkey.prefetch import all_needs

    base = ["method=monkey", "model=lcm_dreamshaper", "run.stages=[generate]"]
    repos = {
        source: {n.repo_id for n in all_needs([*base, f"method.mask_source={source}"])}
        for source in ("attention", "segmenter", "refined")
    }
    clipseg, sam = "CIDAS/clipseg-rd64-refined", "facebook/sam-vit-huge"
    assert clipseg not in repos["attention"] and sam not in repos["attention"]
    assert clipseg in repos["segmenter"] and sam not in repos["segmenter"]
    assert sam in repos["refined"] and clipseg not in repos["refined"]
