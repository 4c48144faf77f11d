"""RectifID (Sun et al., NeurIPS 2024) in object mode on PeRFlow SD1.5: anchored classifier guidance
of a 4-step piecewise rectified flow by an identity loss (OWL-ViT box, DINOv2 CLS + pixel L1).

Modules: scheduler (PeRFlow), detector (subject boxes), embedder (crop embeddings), loss (identity
loss), guidance (the anchored optimisation loop), method (the harness's Method)."""
