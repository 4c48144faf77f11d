"""The Pareto frontier of points where both coordinates are better when higher."""

import numpy as np


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where no other point is at least as good on both axes and better on one. NaN is never on it.

    O(n^2) on purpose: a report has tens of points, and the definition reads straight off the code.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    valid = ~(np.isnan(x) | np.isnan(y))
    mask = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(valid):
        others = valid.copy()
        others[i] = False
        dominated = others & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        mask[i] = not dominated.any()
    return mask


def frontier_path(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frontier's points ordered along x (y then falls), for drawing it as a line."""
    order = np.argsort(np.asarray(x)[mask])
    return np.asarray(x)[mask][order], np.asarray(y)[mask][order]
