"""The evaluation stage's backbones with their real shapes (random weights, fp32 as the harness scores):
images per second through `embed_images` and through the models alone."""

import statistics
from dataclasses import replace
from typing import Any

import torch
from benchtools import timed


def eval_backbones(quick: bool, device: torch.device) -> list[Any]:
    """The harness's backbone classes around the real architectures with random weights (tiny in --quick)."""
    import open_clip
    import timm
    from monkey.eval.backbones import BackboneSpec, OpenClipBackbone, TimmBackbone, load_backbone

    tiny_vit = {"embed_dim": 32, "depth": 2, "num_heads": 2}
    backbones = []
    for key, name in (("dino", "vit_base_patch14_dinov2.lvd142m"), ("dino_v1", "vit_small_patch16_224.dino")):
        spec = BackboneSpec(key=key, kind="timm", model_name=name, image_metric=key)
        with torch.device(device):
            model = timm.create_model(
                name, pretrained=False, num_classes=0, img_size=224, **(tiny_vit if quick else {})
            )
        backbones.append(TimmBackbone(spec, model, device, 32))
    clip = BackboneSpec(
        key="clip",
        kind="open_clip",
        model_name="ViT-B-32",
        image_metric="clip_i",
        text_metric="clip_t",
        force_quick_gelu=True,
    )
    if quick:
        tiny = {
            "embed_dim": 16,
            "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "patch_size": 32, "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
        }
        backbones.append(load_backbone(replace(clip, tiny=tiny), str(device), 32))
    else:
        model, _, transform = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None, force_quick_gelu=True)
        backbones.append(OpenClipBackbone(clip, model, device, 32, transform, open_clip.get_tokenizer("ViT-B-32")))
    return backbones


def measure_eval(quick: bool, device: torch.device, images: list[Any], rounds: int) -> dict[str, Any]:
    backbones = eval_backbones(quick, device)
    pixels = {b.spec.key: torch.stack([b.preprocess(image) for image in images]).to(device) for b in backbones}

    def models_only() -> None:
        with torch.no_grad():
            for backbone in backbones:
                backbone.encode_pixels(pixels[backbone.spec.key])

    def end_to_end() -> None:
        for backbone in backbones:
            backbone.embed_images(images)

    models_only(), end_to_end()  # warm-up
    model_s = statistics.median(timed(models_only, device) for _ in range(rounds))
    total_s = statistics.median(timed(end_to_end, device) for _ in range(rounds))
    return {
        "backbones": [f"{b.spec.key}: {b.spec.model_name}" for b in backbones],
        "images": len(images),
        "batch_size": 32,
        "dtype": "float32 (as the harness scores)",
        "embed_images_per_s": len(images) / total_s,
        "models_only_images_per_s": len(images) / model_s,
        "note": "embed_images includes the harness's CPU preprocessing (resize, crop, normalise) of 512 px PIL "
        "images; one image is embedded by all three backbones",
    }
