"""Helpers for the evaluation tests: a small DreamBooth-layout dataset with a subject of two photos, and
run folders filled with synthetic "generated" images written exactly as the runner writes them."""

import shutil
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from monkey.datasets.dreambooth import load_dreambooth
from monkey.hashing import stable_hash
from monkey.paths import bundled_dreambooth_root
from monkey.plan import WorkItem, build_plan
from monkey.prompts import load_prompt_set
from monkey.store import STATUS_OK, RunStore

# subject -> bundled subjects whose first photo becomes one of its images
SUBJECTS = {"alpha": ("dog", "dog2"), "beta": ("cat",)}
CLASSES = {"alpha": "dog", "beta": "cat"}


def make_dataset(root: Path) -> DictConfig:
    """`root/dataset/<subject>/NN.jpg`: alpha has two photos, beta one. Returns its dataset config."""
    bundled = bundled_dreambooth_root() / "dataset"
    for subject, donors in SUBJECTS.items():
        for index, donor in enumerate(donors):
            target = root / "dataset" / subject / f"{index:02d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(bundled / donor / "00.jpg", target)
    table = "subject_name,class\n" + "".join(f"{s},{c}\n" for s, c in CLASSES.items())
    (root / "dataset" / "prompts_and_classes.txt").write_text(table)
    return OmegaConf.create(
        {
            "_target_": "monkey.datasets.dreambooth.load_dreambooth",
            "name": "dreambooth",
            "root": str(root),
            "images": "first",
        }
    )


def plan_items(dataset_cfg: DictConfig, prompts: int = 2) -> list[WorkItem]:
    sources = load_dreambooth(root=dataset_cfg.root, images="first")
    return build_plan(sources, load_prompt_set("locations", "{subject_word} {location}"), limit_prompts=prompts)


def fake_image(item: WorkItem, method: str, size: int = 64) -> Image.Image:
    """The source photo, shrunk and mixed with method-specific noise: scores vary but stay related."""
    rng = np.random.default_rng(int(stable_hash([item.item_id, method], 8), 16))
    source = np.asarray(item.source.load_image().resize((size, size)), dtype=float)
    noise = rng.uniform(0, 255, source.shape)
    weight = 0.5 if method != "text_only" else 0.1
    return Image.fromarray((weight * source + (1 - weight) * noise).astype(np.uint8))


def fake_generate(
    run_dir: Path,
    items: list[WorkItem],
    method: str,
    prompt_suffix: str = "",
    paper_location: bool = False,
    overlay: bool = False,
    mask: Image.Image | None = None,
) -> None:
    """Write images and manifest rows for `items` as `method`, the way monkey.runner does; with
    `paper_location`, rows also carry the paper preset's CLIP-T text (the location alone); with
    `overlay`, each image gets an `overlay` artifact as MONKEY's do; with `mask`, that `mask` artifact."""
    store = RunStore(run_dir)
    with store.writer(method, f"test-{time.monotonic_ns()}") as writer:
        for index, item in enumerate(items):
            relpath = item.image_relpath(method)
            image = fake_image(item, method)
            store.write_image(relpath, image)
            artifacts = {}
            if overlay:
                artifacts["overlay"] = store.write_artifact(relpath, "overlay", image.convert("L").convert("RGB"))
            if mask is not None:  # MONKEY's image-size mask artifact, as monkey.adapter.artifacts writes it
                artifacts["mask"] = store.write_artifact(relpath, "mask", mask)
            writer.append(
                {
                    **item.describe(),
                    "method": method,
                    "prompt": item.prompt + prompt_suffix,
                    "height": 64,
                    "width": 64,
                    "image": relpath,
                    "artifacts": artifacts,
                    "status": STATUS_OK,
                    "info": {},
                    "timings": {},
                    "plan_index": index,
                    "created": time.time(),
                    "config_hash": "test",
                    "writer": "test",
                    "device": "cpu",
                    "dtype": "float32",
                    "origin": "generated",
                    **({"paper_clip_t_prompt": item.location} if paper_location else {}),
                }
            )
