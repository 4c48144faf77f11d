"""Stand-in for Pillow in the fake FreeGraftor environment (standard library only): just what the driver
calls for the paper's fork, `Image.open(path).convert("RGB")`, as a size and a file name."""
