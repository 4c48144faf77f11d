"""monkey-bench's FreeGraftor driver. It runs under the USER's FreeGraftor environment, never the harness's.

    <freegraftor python> driver.py --jobs jobs.jsonl --out OUT_DIR      (working directory: the checkout)

Standard library only, Python 3.10+: it imports FreeGraftor's `pipeline` module from `<checkout>/src` and nothing of
monkey-bench. For each job line it makes one image and writes `OUT/<id>.png` (+ `<id>.collage.png`,
`<id>.mask.png`) and then `OUT/<id>.json` (status, error, timings, flags, the job line echoed), each
by temp file + rename, and announces the item on the protocol channel.

Three call signatures are supported, each recognised by its exact parameter and field names at start
(the `ready` event and stderr say which); any other signature is refused before the first item:
- `af8c190` (Nihukat/FreeGraftor, 2025-07-23): `ConceptConfig(class_name, image_path)`,
  `pipeline(..., template_path=, output_dir=, clear_*=, offload=, info=<nested dict>)`.
- `2025-10-24` (Nihukat/FreeGraftor 42aeffa, the refactor): `pipeline(..., config=GenerationConfig(...))`,
  offload chosen in the constructor (`requires_offload`).
- `paper-fork` (jamesBaker361/freegraftor a72cb77, the MONKEY authors' fork that made the paper's
  FreeGraftor rows): `ConceptConfig(class_name, image=<PIL image>)`, `pipeline(concept_configs, prompt,
  template_prompt, offload=, info=<dict>)` without `template_path`, `output_dir` or `clear_*`.
The driver checks the size of the image upstream returns: upstream's final decode passes width and
height the other way round (af8c190 src/pipeline.py:195, 42aeffa src/pipeline.py:225), so a
non-square size comes back with its sides swapped, and that item fails instead of being stored.

No subject: when Grounding DINO finds no box for the class word in the reference or the template,
upstream crashes (af8c190) or silently pastes nothing (2025-10-24), and the paper's fork used the
whole image. The driver notices it either way (it wraps the collage creator's `grounding`) and,
per the job's `on_no_subject`, fails the item (`status: no_subject`) or gives the fork's
whole-image mask; `flags.no_subject` names where it happened either way.

Protocol: stdout is the harness's channel (one JSON event per line: ready, item, done); whatever
FreeGraftor prints goes to stderr, which the harness keeps in the shard log. When stdin closes (the
harness died), the driver kills its own process group.
"""

from __future__ import annotations  # loads on an older Python, so main() can say which version it needs

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import signal
import struct
import sys
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path

API_AF8C190 = "af8c190"
API_REFACTOR = "2025-10-24"
API_FORK = "paper-fork"
# Each supported API by its exact names: FreeGraftorPipeline.__call__'s parameters (without self) and
# ConceptConfig's required fields. tests/fake_freegraftor/upstream_signatures.json pins the same names,
# read from the upstream files, so the fakes, this table and upstream cannot drift apart.
# Nihukat/FreeGraftor's own two APIs share their first seven parameters
UPSTREAM_FIRST = (
    "concept_configs",
    "prompt",
    "template_prompt",
    "template_path",
    "output_dir",
    "clear_image_cache",
    "clear_image_info_cache",
)
CALL_PARAMETERS = {
    API_AF8C190: (*UPSTREAM_FIRST, "offload", "info", "callback"),
    API_REFACTOR: (*UPSTREAM_FIRST, "config", "callback"),
    API_FORK: ("concept_configs", "prompt", "template_prompt", "offload", "info", "callback"),
}
CONCEPT_REQUIRED = {
    API_AF8C190: ("class_name", "image_path"),
    API_REFACTOR: ("class_name", "image_path"),
    API_FORK: ("class_name", "image"),
}
MIN_PYTHON = (3, 10)
GENERATION_KEYS = (
    "seed",
    "num_steps",
    "guidance",
    "width",
    "height",
    "start_inject_step",
    "end_inject_step",
    "inject_block_ids",
    "sim_threshold",
    "cyc_threshold",
    "inject_match_dropout",
)


class NoSubject(Exception):
    """Grounding DINO found no box for the class word, and the job says to fail the item."""


# ---- protocol ----------------------------------------------------------------------------------
class Channel:
    """The harness's stdout pipe, kept aside; fd 1 then points at stderr so library prints go to the log."""

    def __init__(self):
        self.stream = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, event: str, **fields) -> None:
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()


def die_with_parent() -> None:
    """A thread that waits for EOF on stdin (the harness gone, however it died) and ends the group."""

    def watch() -> None:
        while os.read(0, 1):  # the raw descriptor: no buffer lock to trip interpreter shutdown
            pass
        if os.getpgrp() == os.getpid():  # the harness made us a group leader: take the workers along
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_png(image, path: Path) -> None:
    atomic_write(path, lambda tmp: image.save(str(tmp), format="PNG"))


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, sort_keys=True)))


# ---- the upstream checkout ----------------------------------------------------------------------
def checkout_commit(checkout: Path) -> str | None:
    """The checked-out commit, read from .git without running git (None when not a clone)."""
    git = checkout / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def required_fields(cls) -> tuple[str, ...]:
    """A dataclass's fields without a default, in order (ConceptConfig's: how a concept is handed over)."""
    fields = getattr(cls, "__dataclass_fields__", {})
    missing = dataclasses.MISSING
    return tuple(n for n, f in fields.items() if f.default is missing and f.default_factory is missing)


def detect_api(module) -> str:
    """Which upstream API `pipeline` has, from its exact call signature and ConceptConfig's required fields
    (not from a version string); any other signature stops the driver with one line naming it."""
    for name in ("FreeGraftorPipeline", "ConceptConfig"):
        if not hasattr(module, name):
            raise SystemExit(f"freegraftor driver: {module.__file__} has no {name}; is this a FreeGraftor checkout?")
    params = tuple(inspect.signature(module.FreeGraftorPipeline.__call__).parameters)[1:]  # without self
    concept = required_fields(module.ConceptConfig)
    for api, expected in CALL_PARAMETERS.items():
        if params == expected and concept == CONCEPT_REQUIRED[api]:
            if api == API_REFACTOR and not hasattr(module, "GenerationConfig"):
                continue
            return api
    raise SystemExit(
        f"freegraftor driver: unsupported FreeGraftor API in {module.__file__}: __call__({', '.join(params)}), "
        f"ConceptConfig({', '.join(concept)}); supported: {', '.join(CALL_PARAMETERS)} "
        "(their signatures: docs/methods/freegraftor.md)"
    )


def nested_dict() -> defaultdict:
    return defaultdict(nested_dict)


def generation_settings(job: dict) -> dict:
    knobs = job["knobs"]
    first, last = knobs["inject_blocks"]
    settings = {
        "seed": job["seed"],
        "num_steps": knobs["num_steps"],
        "guidance": knobs["guidance"],
        "width": job["width"],
        "height": job["height"],
        "start_inject_step": knobs["start_inject_step"],
        "end_inject_step": knobs["num_steps"] if knobs["end_inject_step"] is None else knobs["end_inject_step"],
        "inject_block_ids": list(range(first, last + 1)),
        "sim_threshold": knobs["sim_threshold"],
        "cyc_threshold": knobs["cyc_threshold"],
        "inject_match_dropout": knobs["inject_match_dropout"],
    }
    assert set(settings) == set(GENERATION_KEYS)
    return settings


# ---- subject detection and the collage ----------------------------------------------------------
def png_size(path: str) -> tuple[int, int]:
    """(width, height) from a PNG header (the harness always hands PNGs)."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


class CollageWatch:
    """Wraps the pipeline's collage creator: records the collage and its mask, and what Grounding DINO
    found, and applies the job's no-subject policy. Works on both APIs: both call
    `collage_creator(template, concept_configs)`, which calls `self.segment(...)`, which calls
    `self.grounding(...)` and reads `["boxes"]`."""

    def __init__(self, pipeline):
        self.creator = pipeline.collage_creator
        self.policy = "fail"
        self.reset()
        original_grounding, original_segment = self.creator.grounding, self.creator.segment

        def grounding(*args, **kwargs):
            found = original_grounding(*args, **kwargs)
            self.boxes_found = len(found["boxes"])
            return found

        def segment(*args, image_path=None, pil_image=None, prompt=None):
            self.boxes_found = None
            try:
                result, error = original_segment(*args, image_path=image_path, pil_image=pil_image, prompt=prompt), None
            except Exception as err:  # af8c190 may fail inside SAM on an empty box list
                result, error = None, err
            if self.boxes_found == 0:
                reference = image_path is not None or any(pil_image is image for image in self.references)
                where = "reference" if reference else "template"
                self.no_subject.append(where)
                if self.policy != "whole_image":
                    raise NoSubject(f"Grounding DINO found no {prompt!r} in the {where} image")
                size = png_size(image_path) if image_path is not None else pil_image.size
                return whole_image_mask(size)
            if error is not None:
                raise error
            return result

        self.creator.grounding = grounding  # instance attributes: upstream's self.segment/self.grounding find them
        self.creator.segment = segment
        watch = self

        class Recording:
            def __call__(self, *args, **kwargs):
                collage, mask = watch.creator(*args, **kwargs)
                watch.collage, watch.mask = collage, mask
                return collage, mask

            def __getattr__(self, name):
                return getattr(watch.creator, name)

        pipeline.collage_creator = Recording()

    def reset(self, policy: str = "fail") -> None:
        self.policy = policy
        self.references: tuple = ()  # the concepts' own images, where the API hands images (the fork)
        self.boxes_found: int | None = None
        self.no_subject: list[str] = []
        self.collage = self.mask = None


def whole_image_mask(size: tuple[int, int]):
    """The paper's fork's fallback: the whole image is the subject ([1, H, W] mask, full box)."""
    import torch

    width, height = size
    return [torch.ones((1, height, width), dtype=torch.bool)], [torch.tensor([0.0, 0.0, float(width), float(height)])]


# ---- generation ---------------------------------------------------------------------------------
def build_pipeline(module, api: str, knobs: dict, scratch: Path):
    kwargs = {
        "image_cache_dir": str(scratch / "image_cache"),
        "image_info_cache_dir": str(scratch / "image_info_cache"),
    }
    if api == API_REFACTOR:
        kwargs["requires_offload"] = bool(knobs["offload"])
    return module.FreeGraftorPipeline(**kwargs)


def concept_config(module, api: str, job: dict):
    """The subject as this API takes it: a path (upstream), or the opened image (the paper's fork)."""
    if api != API_FORK:
        return module.ConceptConfig(class_name=job["class_name"], image_path=job["subject_image"])
    from PIL import Image  # the fork's environment has Pillow (FreeGraftor needs it); upstream's APIs do not need it

    with Image.open(job["subject_image"]) as opened:
        image = opened.convert("RGB")  # decoded now, so the file is closed
    return module.ConceptConfig(class_name=job["class_name"], image=image)


def generate(module, api: str, pipeline, concept, job: dict, scratch: Path):
    settings = generation_settings(job)
    common = {"concept_configs": [concept], "prompt": job["prompt"], "template_prompt": job["template_prompt"]}
    if api == API_FORK:  # as the fork's evaluation.py:88-129 calls it: a plain info dict, image_info reset per item
        info = dict(settings, image_info={"latents": {}})
        return pipeline(**common, offload=bool(job["knobs"]["offload"]), info=info)
    common |= {
        "template_path": None,
        "output_dir": str(scratch / "upstream_output"),
        "clear_image_cache": False,
        "clear_image_info_cache": False,
    }
    if api == API_REFACTOR:
        return pipeline(**common, config=module.GenerationConfig(**settings))
    info = nested_dict()
    info.update(settings)
    return pipeline(**common, offload=bool(job["knobs"]["offload"]), info=info)


def check_size(image, job: dict) -> None:
    """Upstream decodes with width and height swapped (see the module docstring): refuse such an image."""
    asked = (job["width"], job["height"])
    if tuple(image.size) != asked:
        raise ValueError(
            f"upstream returned a {image.size[0]}x{image.size[1]} (width x height) image for {asked[0]}x{asked[1]}; "
            "its final decode swaps width and height, so use a square size for FreeGraftor"
        )


def run_job(module, api: str, pipeline, watch: CollageWatch, job: dict, out: Path, scratch: Path) -> dict:
    key = job["id"]
    watch.reset(job["knobs"]["on_no_subject"])
    start = time.perf_counter()
    result = {"id": key, "job": job, "api": api, "artifacts": {}, "error": None}
    try:
        concept = concept_config(module, api, job)
        watch.references = (getattr(concept, "image", None),)
        image = generate(module, api, pipeline, concept, job, scratch)
        check_size(image, job)
        save_png(image, out / f"{key}.png")
        for name in ("collage", "mask"):
            artifact = getattr(watch, name)
            if artifact is not None:
                save_png(artifact, out / f"{key}.{name}.png")
                result["artifacts"][name] = f"{key}.{name}.png"
        result["status"] = "ok"
    except NoSubject as err:
        result.update(status="no_subject", error=str(err))
    except Exception as err:
        traceback.print_exc()
        result.update(status="failed", error=f"{type(err).__name__}: {err}")
    result["flags"] = {"no_subject": watch.no_subject}
    if watch.no_subject and result["status"] == "ok":
        result["flags"]["subject_fallback"] = "whole_image"
    result["timings"] = {"item_s": round(time.perf_counter() - start, 4)}
    result.update(device_report(pipeline))
    return result


def device_report(pipeline) -> dict:
    """Where upstream ran and its peak GPU memory so far (only when torch is loaded and has CUDA)."""
    report = {}
    if getattr(pipeline, "device", None) is not None:
        report["device"] = str(pipeline.device)
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_available():
        report["peak_gpu_mb"] = round(cuda.max_memory_allocated() / 2**20, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkout", type=Path, default=Path.cwd(), help="FreeGraftor clone (default: cwd)")
    args = parser.parse_args()
    if sys.version_info < MIN_PYTHON:
        raise SystemExit(
            f"freegraftor driver: {sys.executable} is Python {sys.version_info[0]}.{sys.version_info[1]}; "
            f"the driver needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+"
        )
    channel = Channel()
    die_with_parent()
    jobs = [json.loads(line) for line in args.jobs.read_text().splitlines() if line.strip()]
    out, scratch = args.out, args.out / ".scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    checkout = args.checkout.resolve()
    sys.path.insert(0, str(checkout / "src"))
    load_start = time.perf_counter()
    module = importlib.import_module("pipeline")
    api = detect_api(module)
    commit = checkout_commit(checkout)
    print(f"freegraftor driver: FreeGraftor API {api} (commit {commit or 'unknown'}) in {checkout}", file=sys.stderr)
    pipeline = build_pipeline(module, api, jobs[0]["knobs"] if jobs else {"offload": False}, scratch)
    watch = CollageWatch(pipeline)
    channel.send("ready", api=api, commit=commit, load_s=round(time.perf_counter() - load_start, 3), pid=os.getpid())
    for job in jobs:
        result = run_job(module, api, pipeline, watch, job, out, scratch)
        result["commit"] = commit
        write_json(out / f"{job['id']}.json", result)
        channel.send("item", id=job["id"], status=result["status"])
    channel.send("done")


if __name__ == "__main__":
    main()
