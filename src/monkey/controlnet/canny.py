"""Canny edges with numpy and scipy (no OpenCV), the operation lllyasviel's canny annotator runs with
`cv2.Canny(image, low, high)`: 3x3 Sobel gradients, L1 magnitude |gx| + |gy|, non-maximum suppression
along the gradient direction rounded to 0, 45, 90 or 135 degrees (OpenCV's tie rule: strictly above
the neighbour behind, at least the one ahead on the axes; strictly above both on the diagonals), then
hysteresis: a pixel above `high` is an edge, and so is every pixel above `low` joined to one through
its 8 neighbours. No smoothing before the gradients, as cv2.Canny does none."""

import numpy as np
from scipy import ndimage

# neighbour offsets (row, column) along each rounded gradient direction; rows grow downwards
DIRECTIONS = {0: (0, 1), 45: (1, 1), 90: (1, 0), 135: (1, -1)}


def sobel_gradients(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d/dx and d/dy of a [H, W] image with the unnormalised 3x3 Sobel kernels, borders replicated."""
    image = gray.astype(np.float64)
    return ndimage.sobel(image, axis=1, mode="nearest"), ndimage.sobel(image, axis=0, mode="nearest")


def rounded_direction(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The gradient's direction rounded to 0, 45, 90 or 135 degrees ([H, W] ints)."""
    angle = np.rad2deg(np.arctan2(gy, gx)) % 180.0
    bins = np.array([0, 45, 90, 135, 0])
    return bins[np.floor((angle + 22.5) / 45.0).astype(int)]


def shifted(values: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """values[r + rows, c + cols] at [r, c], zero outside the image."""
    height, width = values.shape
    padded = np.pad(values, 1)
    return padded[1 + rows : 1 + rows + height, 1 + cols : 1 + cols + width]


def thin(magnitude: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Non-maximum suppression: where the magnitude is a ridge across the gradient ([H, W] bool)."""
    keep = np.zeros(magnitude.shape, dtype=bool)
    for degrees, (rows, cols) in DIRECTIONS.items():
        behind, ahead = shifted(magnitude, -rows, -cols), shifted(magnitude, rows, cols)
        if degrees in (0, 90):
            ridge = (magnitude > behind) & (magnitude >= ahead)
        else:
            ridge = (magnitude > behind) & (magnitude > ahead)
        keep |= (direction == degrees) & ridge
    return keep


def hysteresis(candidates: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Every 8-connected group of `candidates` that holds a `strong` pixel ([H, W] bool)."""
    labels, _ = ndimage.label(candidates, structure=np.ones((3, 3), dtype=bool))
    kept = np.unique(labels[strong & candidates])
    return np.isin(labels, kept[kept > 0])


def canny(gray: np.ndarray, low: float, high: float) -> np.ndarray:
    """Edges of a [H, W] 0-255 gray image as a [H, W] bool map (thresholds as cv2.Canny's)."""
    gx, gy = sobel_gradients(gray)
    magnitude = np.abs(gx) + np.abs(gy)
    ridge = thin(magnitude, rounded_direction(gx, gy))
    return hysteresis(ridge & (magnitude > low), ridge & (magnitude > high))
