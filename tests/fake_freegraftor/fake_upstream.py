"""Behaviour shared by the two fake FreeGraftor APIs: solid-colour images whose colour is a hash of
(prompt, seed, size), a collage creator with upstream's method names, a call log, and faults on
request (fake_control.json in the working directory, i.e. the checkout)."""

import hashlib
import json
import os
import struct
import sys
import time
import zlib
from pathlib import Path

import torch


def control():
    path = Path("fake_control.json")
    return json.loads(path.read_text()) if path.is_file() else {}


def colour(prompt, seed, width, height):
    """The colour the test computes independently for a (prompt, seed, size)."""
    return tuple(hashlib.sha256(f"{prompt}|{seed}|{width}x{height}".encode()).digest()[:3])


def png_header_size(path):
    with open(path, "rb") as handle:
        head = handle.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


class FakeImage:
    """What upstream returns (a PIL image) as far as the driver uses it: `size` and `save`."""

    def __init__(self, width, height, value, prompt=""):
        self.size = (width, height)
        self.value = value  # (r, g, b) or a grey level
        self.prompt = prompt

    def save(self, fp, format=None):
        width, height = self.size
        grey = isinstance(self.value, int)
        pixel = bytes([self.value]) if grey else bytes(self.value)
        raw = b"".join(b"\x00" + pixel * width for _ in range(height))

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", width, height, 8, 0 if grey else 2, 0, 0, 0)
        data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
        Path(fp).write_bytes(data)


class FakeCollageCreator:
    """Upstream's method names: grounding -> boxes, segment -> (masks, boxes), __call__ -> (collage, mask).
    `strict`: af8c190 indexes the first detection (crashes when there is none); 2025-10-24 pastes nothing."""

    def __init__(self, strict):
        self.strict = strict

    def grounding(self, image_path=None, pil_image=None, prompt=""):
        opened = getattr(pil_image, "filename", None)  # the paper's fork hands the reference as an opened image
        where = "reference" if image_path is not None or opened else "template"
        text = image_path if image_path is not None else opened or pil_image.prompt
        missing = any(rule["where"] == where and rule["contains"] in text for rule in control().get("no_subject", []))
        boxes = [] if missing else [[0.0, 0.0, 8.0, 8.0]]
        return {"boxes": boxes, "scores": [0.9] * len(boxes)}

    def segment(self, image_path=None, pil_image=None, prompt=None):
        found = self.grounding(image_path=image_path, pil_image=pil_image, prompt=prompt)
        return [torch.ones((1, 8, 8), dtype=torch.bool) for _ in found["boxes"]], list(found["boxes"])

    def __call__(self, template, concept_configs):
        whole = []
        for concept in concept_configs:
            image = getattr(concept, "image", None)
            if image is not None:  # the fork: segment(pil_image=config.image, ...)
                (width, height), masks = image.size, self.segment(pil_image=image, prompt=concept.class_name)[0]
            else:
                width, height = png_header_size(concept.image_path)
                masks, _ = self.segment(image_path=concept.image_path, prompt=concept.class_name)
            reference = masks[0] if self.strict or masks else None
            masks, _ = self.segment(pil_image=template, prompt=concept.class_name)
            target = masks[0] if self.strict or masks else None
            whole.append(reference is not None and reference.shape == (1, height, width))
            whole.append(target is not None and target.shape == (1, template.size[1], template.size[0]))
        level = 255 if any(whole) else (128 if target is not None else 0)
        return FakeImage(*template.size, (10, 20, 30)), FakeImage(*template.size, level)


def generate(pipe, api, concept_configs, prompt, template_prompt, settings):
    """One fake FreeGraftor image; logs the call, then sleeps, crashes or hangs as told."""
    rules = control()
    for name in ("FLUX_DEV", "GROUNDING_DINO", "SAM"):
        assert Path(os.environ[name]).exists(), f"{name} not passed"
    (concept,) = concept_configs
    width, height = settings["width"], settings["height"]
    call = {
        "api": api,
        "pid": os.getpid(),
        "prompt": prompt,
        "template_prompt": template_prompt,
        "class_name": concept.class_name,
        "image_path": concept.image.filename if getattr(concept, "image", None) is not None else concept.image_path,
        "settings": settings,
        "offload": pipe.offload,
        "modules": sorted(name for name in sys.modules if name.split(".")[0] in ("monkey", "PIL", "numpy")),
    }
    with open("calls.jsonl", "a") as log:
        log.write(json.dumps(call) + "\n")
    start = time.monotonic()
    while time.monotonic() - start < float(control().get("sleep_s", 0)):  # re-read: a test may extend it
        time.sleep(0.05)
    if any(text in prompt for text in rules.get("crash_on", [])):
        print("fake FreeGraftor: crashing on purpose", file=sys.stderr, flush=True)
        os._exit(3)
    if any(text in prompt for text in rules.get("hang_on", [])):
        time.sleep(600)
    template = FakeImage(width, height, (0, 0, 0), prompt=template_prompt)
    pipe.collage_creator(template, concept_configs)
    print(f"fake FreeGraftor: made {prompt!r}", flush=True)  # upstream prints to stdout too
    if rules.get("swap_output") and width != height:  # upstream's final decode: unpack(x, width, height)
        width, height = height, width
    return FakeImage(width, height, colour(prompt, settings["seed"], width, height))
