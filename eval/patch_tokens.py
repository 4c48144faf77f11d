"""Patch tokens of the metric backbones, subject masks on their patch grids, and patch matching.

Tokens (fp32, L2-normalised per patch, [h, w, D]):
    timm ViT    `forward_features` (after the final norm), the prefix tokens (CLS, registers) dropped
    open_clip   the visual transformer's token output (`output_tokens`, after `ln_post`), projected with
                the visual projection `proj` like the pooled embedding, so tokens live in the CLIP space

A mask reaches the patch grid through the backbone's own geometry: its Resize and CenterCrop steps,
bilinear (antialiased) on the mask as a float image, then the mean over each patch's pixels (the patch's
subject fraction). A patch is subject when at least `PATCH_FRACTION` of its area is.

subject_match(generated, reference) = mean over the reference's subject patches r of
max over the generated image's subject patches g of cos(t_r, t_g): every part of the reference subject
must be found somewhere in the generated subject, wherever it sits (no box crop, no alignment).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from monkey.errors import ConfigError

PATCH_FRACTION = 0.5  # a patch is subject when at least half of its area is


@torch.no_grad()
def patch_tokens(backbone, images: Sequence[Image.Image]) -> list[torch.Tensor]:
    """[N] PIL images -> N tensors [h, w, D], fp32, L2-normalised per patch, CPU."""
    out: list[torch.Tensor] = []
    h, w = token_grid(backbone)
    for start in range(0, len(images), backbone.batch_size):
        chunk = images[start : start + backbone.batch_size]
        pixels = torch.stack([backbone.preprocess(image.convert("RGB")) for image in chunk]).to(backbone.device)
        tokens = raw_tokens(backbone, pixels).float()  # [B, h*w, D]
        tokens = F.normalize(tokens, dim=-1).cpu()
        out.extend(t.reshape(h, w, -1) for t in tokens)
    return out


def raw_tokens(backbone, pixels: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, h*w, D] patch tokens, in grid order (row-major)."""
    model = backbone.model
    if backbone.spec.kind == "timm":
        return model.forward_features(pixels)[:, model.num_prefix_tokens :]
    visual = model.visual
    previous = visual.output_tokens
    visual.output_tokens = True
    try:
        _, tokens = visual(pixels)  # [B, h*w, width], after ln_post
    finally:
        visual.output_tokens = previous
    return tokens @ visual.proj if visual.proj is not None else tokens


def token_grid(backbone) -> tuple[int, int]:
    model = backbone.model
    grid = model.patch_embed.grid_size if backbone.spec.kind == "timm" else model.visual.grid_size
    return int(grid[0]), int(grid[1])


def patch_size(backbone) -> tuple[int, int]:
    model = backbone.model
    size = model.patch_embed.patch_size if backbone.spec.kind == "timm" else model.visual.patch_size
    return (int(size[0]), int(size[1])) if isinstance(size, tuple | list) else (int(size), int(size))


def mask_fractions(backbone, mask: torch.Tensor) -> torch.Tensor:
    """[H, W] bool mask of an image as stored -> [h, w] subject fraction of each patch the backbone sees."""
    from torchvision import transforms
    from torchvision.transforms import functional as TF

    plane = mask.float()[None]  # [1, H, W]
    for step in getattr(backbone.transform, "transforms", []):
        if isinstance(step, transforms.Resize):
            plane = TF.resize(
                plane, step.size, interpolation=transforms.InterpolationMode.BILINEAR, max_size=step.max_size,
                antialias=True,
            )  # fmt: skip
        elif isinstance(step, transforms.CenterCrop):
            plane = TF.center_crop(plane, list(step.size))
        elif isinstance(step, transforms.RandomResizedCrop | transforms.Pad):
            raise ConfigError(f"eval.backbones.{backbone.spec.key}: its transform step {step} has no mask rule")
    ph, pw = patch_size(backbone)
    fractions = F.avg_pool2d(plane[None], kernel_size=(ph, pw), stride=(ph, pw))[0, 0]  # [h, w]
    if tuple(fractions.shape) != token_grid(backbone):
        raise ConfigError(
            f"eval.backbones.{backbone.spec.key}: the mask reaches a {tuple(fractions.shape)} grid but the model "
            f"has {token_grid(backbone)} patches"
        )
    return fractions.clamp(0.0, 1.0)


def subject_patches(backbone, mask: torch.Tensor) -> torch.Tensor:
    """[H, W] bool -> [h, w] bool: the patches at least PATCH_FRACTION subject."""
    return mask_fractions(backbone, mask) >= PATCH_FRACTION


def subject_match(
    generated: torch.Tensor,  # [h, w, D] unit tokens
    generated_subject: torch.Tensor,  # [h, w] bool
    reference: torch.Tensor,  # [h', w', D] unit tokens
    reference_subject: torch.Tensor,  # [h', w'] bool
) -> float | None:
    """Mean over reference subject patches of the best cosine among generated subject patches (None when
    either side has no subject patch)."""
    g = generated[generated_subject].double()  # [G, D]
    r = reference[reference_subject].double()  # [R, D]
    if len(g) == 0 or len(r) == 0:
        return None
    return float((r @ g.T).max(dim=1).values.mean())  # [R, G] -> [R] -> scalar
