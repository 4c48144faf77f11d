"""RectifID's models for the benchmarks, built from configs with random weights (no download).

`perflow_pipeline`: PeRFlow SD1.5's architecture (SD1.5 UNet 320/640/1280/1280, cross-attention 768;
the SD VAE; a CLIP ViT-L/14-sized text encoder) in a StableDiffusionPipeline with the project's
PeRFlowScheduler. `identity_loss`: OWL-ViT base-patch32 and DINOv2 ViT-B/14 shapes, random, written
once into the cache in their hub layouts and loaded through from_pretrained. `quick=True` gives the
tiny twins of the test suite instead.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensure_monkey_importable() -> None:
    """Without an install (the GPU machine): `monkey` from src/, `monkey.baselines` from baselines/."""
    try:
        import monkey.baselines.rectifid
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))
        import monkey

        monkey.__path__.append(str(ROOT))  # monkey.baselines -> ROOT/baselines, as pyproject's package-dir


ensure_monkey_importable()

import diffusers  # noqa: E402
import torch  # noqa: E402
from monkey.baselines.rectifid.detector import OwlVitDetector  # noqa: E402
from monkey.baselines.rectifid.embedder import Dinov2Embedder  # noqa: E402
from monkey.baselines.rectifid.loss import IdentityLoss  # noqa: E402
from monkey.baselines.rectifid.scheduler import PeRFlowScheduler  # noqa: E402
from sd15_arch import clip_text, sd15_unet, sd_vae  # noqa: E402

from monkey.models.tiny_rectifid import materialize_dinov2, materialize_owlvit  # noqa: E402


def perflow_scheduler() -> PeRFlowScheduler:
    stock = diffusers.PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return PeRFlowScheduler.from_config(stock.config, prediction_type="diff_eps", num_time_windows=4)


def perflow_pipeline(folder: Path, device: torch.device, dtype: torch.dtype, quick: bool = False):
    """PeRFlow SD1.5's architecture, random weights (quick: the tiny twin of the tests)."""
    torch.manual_seed(0)
    if quick:
        from monkey.models.tiny import materialize_tiny

        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            materialize_tiny("perflow").pipeline, safety_checker=None, requires_safety_checker=False
        )
        pipe.scheduler = PeRFlowScheduler.from_config(pipe.scheduler.config, prediction_type="diff_eps")
    else:
        tokenizer, text_encoder = clip_text(folder)
        pipe = diffusers.StableDiffusionPipeline(
            vae=sd_vae(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=sd15_unet(),
            scheduler=perflow_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    return pipe


def identity_loss(device: torch.device, dtype: torch.dtype, quick: bool = False) -> IdentityLoss:
    """OWL-ViT base-patch32 and DINOv2 ViT-B/14 shapes with random weights (quick: tiny twins)."""
    detector = OwlVitDetector(str(materialize_owlvit(full_size=not quick)), device=device)
    embedder = Dinov2Embedder(str(materialize_dinov2(full_size=not quick)), device=device)
    detector.model.to(dtype)
    embedder.model.to(dtype)
    return IdentityLoss(detector, embedder)
