"""Point labels that neither overlap each other nor leave the axes, measured on the drawn text.

Why: variants of one method (a sweep's neighbours) sit almost on one spot, and labels at a fixed
offset stacked over each other and ran past the frame. Here each label tries positions around its
point (8 directions, growing distances; a thin leader line once it is away from the point) and keeps
the first whose rendered box (the renderer's extent, in display pixels) is inside the axes and clear
of the labels placed before it, the markers and the frontier line. Call it after the figure's layout
is final (after tight_layout): boxes are measured in the figure's current geometry.
"""

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox

log = logging.getLogger(__name__)
DIRECTIONS = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]  # (dx, dy) signs
DISTANCES = (4, 10, 18, 28, 40, 54, 70, 90, 112)  # points from the data point
LEADER_FROM = 18  # points: farther labels get a thin line to their point
PAD = 1.0  # pixels kept between two boxes
MARKER_RADIUS = 3.5  # points: a marker's half width (ms=6) and a little, kept clear


@dataclass
class PointLabel:
    x: float  # data coordinates
    y: float
    text: str
    style: dict[str, Any] = field(default_factory=dict)  # Text keyword arguments (fontsize, color)


def overlaps(a: Bbox, b: Bbox, pad: float = PAD) -> bool:
    return a.x0 < b.x1 + pad and b.x0 < a.x1 + pad and a.y0 < b.y1 + pad and b.y0 < a.y1 + pad


def inside(box: Bbox, frame: Bbox) -> bool:
    return box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1


def text_box(annotation: Annotation, renderer: Any) -> Bbox:
    """The label's text alone (Annotation's own extent also covers its leader line)."""
    annotation.update_positions(renderer)  # from its point and offset, as drawing does
    return Text.get_window_extent(annotation, renderer)


def point_boxes(ax: Axes, xs: np.ndarray, ys: np.ndarray, radius_points: float) -> list[Bbox]:
    """Display boxes of `radius_points` around data points (markers, or samples along a line)."""
    radius = radius_points * ax.figure.dpi / 72
    centres = ax.transData.transform(np.column_stack([xs, ys]))  # [n, 2] pixels
    return [Bbox.from_extents(cx - radius, cy - radius, cx + radius, cy + radius) for cx, cy in centres]


def line_samples(xs: np.ndarray, ys: np.ndarray, per_segment: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Points along a polyline (the frontier), so a label crossing it is seen as an overlap."""
    if len(xs) < 2:
        return np.asarray(xs, float), np.asarray(ys, float)
    t = np.linspace(0, 1, per_segment)
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    px = (xs[:-1, None] + (xs[1:] - xs[:-1])[:, None] * t).ravel()  # [segments * per_segment]
    py = (ys[:-1, None] + (ys[1:] - ys[:-1])[:, None] * t).ravel()
    return px, py


def candidates() -> list[tuple[float, float, str, str]]:
    """(dx, dy) offsets in points with the text alignment that puts the text on that side."""
    out = []
    for distance in DISTANCES:
        for sx, sy in DIRECTIONS:
            ha = "left" if sx > 0 else ("right" if sx < 0 else "center")
            va = "bottom" if sy > 0 else ("top" if sy < 0 else "center")
            out.append((sx * distance, sy * distance, ha, va))
    return out


def place_labels(ax: Axes, labels: list[PointLabel], obstacles: list[Bbox] | None = None) -> list[Annotation]:
    """Annotate every label at the first candidate position that fits; return the annotations in order.
    A label that fits nowhere goes where it overlaps least (inside the axes when it can) and is logged."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    blocked = list(obstacles or [])
    placed: list[Annotation] = []
    for label in labels:
        best, best_cost = None, None
        for dx, dy, ha, va in candidates():
            far = abs(dx) >= LEADER_FROM or abs(dy) >= LEADER_FROM
            annotation = ax.annotate(
                label.text,
                (label.x, label.y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                annotation_clip=False,
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.6", "shrinkA": 0, "shrinkB": 3} if far else None,
                **label.style,
            )
            box = text_box(annotation, renderer)
            cost = (0 if inside(box, frame) else 1000) + sum(overlaps(box, other) for other in blocked)
            if best_cost is None or cost < best_cost:
                if best is not None:
                    best.remove()
                best, best_cost = annotation, cost
            else:
                annotation.remove()
            if cost == 0:
                break
        if best_cost:
            log.warning("Pareto plot: no free spot for the label %r; it overlaps (cost %d)", label.text, best_cost)
        blocked.append(text_box(best, renderer))
        placed.append(best)
    return placed
