"""ControlNet for the IP-Adapter methods (MONKEY and the plain IP-Adapter): a `method.control` block.

A ControlNet loaded with diffusers' `ControlNetModel.from_pretrained` is run beside the UNet of the
method's own pipeline by a UNet forward pre-hook (hook.py), which adds its residuals as diffusers'
ControlNet pipeline does, so every pipeline MONKEY drives (LCM, Stable Diffusion) takes a control
without changing class. One item's control image comes from a folder keyed by location or from a
stated preprocessor applied to the item's subject image (images.py, canny.py). Names here avoid
`control`, which in monkey.adapter is the per-step IP-scale controller.
"""

from monkey.controlnet.settings import ControlSettings, control_settings

__all__ = ["ControlSettings", "control_settings"]
