"""TF-TI2I (Hsiao et al., 2025) on diffusers' Stable Diffusion 3: contextual token sharing
(processor.py), its sampling loop (sampling.py) and the harness method (method.py)."""
