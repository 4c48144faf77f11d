"""Package data: prompt lists and the bundled DreamBooth subset (see dreambooth/README.md)."""
