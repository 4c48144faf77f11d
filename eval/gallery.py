"""gallery.html: one static page per report to look at a run's images rather than read a CSV.

Every finished image of every run folder is a card: a thumbnail (lazy-loaded, linking to the full
image), its subject photo, method, subject, seed, the exact prompt, its scores (when the folders hold
the score set) and, for MONKEY, a thumbnail of its mask overlay. Selects filter the cards by method,
dataset, subject and prompt. The page is one HTML file with its CSS and JS inline, thumbnails in
gallery/ beside it, and full images linked by relative path, so it opens from the file system.

    <report>/gallery.html
    <report>/gallery/<hash>.jpg   thumbnails, named by the source file's path and stat (reused on rerun)
"""

import html
import io
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from monkey.eval.collect import variant_labels
from monkey.eval.score_store import ScoreSet
from monkey.eval.scoring import AS_STORED
from PIL import Image

from monkey.atomic import atomic_write_bytes
from monkey.errors import DataError
from monkey.hashing import stable_hash
from monkey.images import load_rgb
from monkey.store import STATUS_OK, RunStore

GALLERY = "gallery.html"
THUMBS = "gallery"
THUMB_SIZE = 192
SOURCE_SIZE = 72
FILTERS = ("method", "dataset", "subject", "prompt")


@dataclass(frozen=True)
class Card:
    method: str  # the variant label, as in the report's tables
    dataset: str
    subject: str
    prompt: str
    seed: int
    item_id: str
    image: Path
    source: Path
    overlay: Path | None
    scores: dict[str, float] = field(default_factory=dict)


def asset(name: str) -> str:
    return resources.files("monkey.eval").joinpath("assets", name).read_text()


def score_records(run_dir: Path, score_set: str | None) -> dict[tuple[str, str], dict[str, float]]:
    """(method, item_id) -> the image's scores, from the folder's score set (empty when it has none)."""
    if not score_set:
        return {}
    return {(r["method"], r["item_id"]): r.get("scores", {}) for r in ScoreSet(run_dir, score_set).records()}


def gallery_cards(run_dirs: list[Path], score_set: str | None = None) -> list[Card]:
    rows = []
    for run_dir in run_dirs:
        scores = score_records(run_dir, score_set)
        for row in RunStore(run_dir).rows():
            if row.get("status") != STATUS_OK or not (run_dir / row["image"]).is_file():
                continue
            rows.append({**row, "run_dir": str(run_dir), "scores": scores.get((row["method"], row["item_id"]), {})})
    if not rows:
        raise DataError(f"no finished image in {[str(d) for d in run_dirs]}: nothing to show in a gallery")
    frame = pd.DataFrame(rows)
    frame["variant"] = variant_labels(frame)
    cards = []
    for row in frame.to_dict("records"):
        run_dir = Path(row["run_dir"])
        overlay = (row.get("artifacts") or {}).get("overlay")
        cards.append(
            Card(
                method=row["variant"],
                dataset=row["dataset"],
                subject=row["subject"],
                prompt=row["prompt"],
                seed=int(row["generation_seed"] if pd.notna(row.get("generation_seed")) else row["seed"]),
                item_id=row["item_id"],
                image=run_dir / row["image"],
                source=Path(row["source_path"]),
                overlay=run_dir / overlay if overlay else None,
                scores={k: v for k, v in row["scores"].items() if v is not None},
            )
        )
    return sorted(cards, key=lambda c: (c.dataset, c.subject, c.item_id, c.method))


class Thumbnails:
    """Writes each thumbnail once (atomic); returns its path relative to the report folder."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def __call__(self, path: Path, size: int) -> str:
        stat = path.stat()
        name = f"{THUMBS}/{stable_hash([str(path.resolve()), stat.st_size, stat.st_mtime_ns, size], 20)}.jpg"
        target = self.out_dir / name
        if not target.is_file():
            image = load_rgb(path, AS_STORED)
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=88)
            atomic_write_bytes(target, buffer.getvalue())
        return name


def link(path: Path, out_dir: Path) -> str:
    """A relative URL from the report folder, so the page works wherever the folders are opened."""
    return quote(os.path.relpath(path.resolve(), out_dir.resolve()))


def card_html(card: Card, out_dir: Path, thumb) -> str:
    e = html.escape
    data = " ".join(f'data-{key}="{e(str(getattr(card, key)))}"' for key in FILTERS)
    scores = " · ".join(f"{e(k)} {v:.3f}" for k, v in card.scores.items() if isinstance(v, int | float))
    overlay = (
        f'<a href="{link(card.overlay, out_dir)}"><img class="overlay" loading="lazy" '
        f'src="{thumb(card.overlay, THUMB_SIZE)}" alt="mask overlay" title="MONKEY mask overlay"></a>'
        if card.overlay and card.overlay.is_file()
        else ""
    )
    return (
        f'<figure class="card" {data} data-item="{e(card.item_id)}">'
        f'<div class="pics"><a href="{link(card.image, out_dir)}"><img class="image" loading="lazy" '
        f'src="{thumb(card.image, THUMB_SIZE)}" alt="{e(card.method)}: {e(card.prompt)}"></a>{overlay}'
        f'<img class="source" loading="lazy" src="{thumb(card.source, SOURCE_SIZE)}" alt="subject photo" '
        'title="subject photo"></div>'
        f"<figcaption><b>{e(card.method)}</b> · {e(card.dataset)}/{e(card.subject)} · seed {card.seed}"
        f"<br><q>{e(card.prompt)}</q>{f'<br><small>{scores}</small>' if scores else ''}</figcaption></figure>"
    )


def select_html(key: str, cards: list[Card]) -> str:
    values = sorted({str(getattr(c, key)) for c in cards})
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    select = f'<select id="filter-{key}" data-key="{key}"><option value="">all</option>{options}</select>'
    return f"<label>{key} {select}</label>"


def gallery_html(cards: list[Card], out_dir: Path, title: str) -> str:
    thumb = Thumbnails(out_dir)
    body = "\n".join(card_html(card, out_dir, thumb) for card in cards)
    filters = " ".join(select_html(key, cards) for key in FILTERS)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{asset('gallery.css')}</style></head><body>"
        f'<header><h1>{html.escape(title)}</h1><nav>{filters} <span id="shown"></span></nav></header>'
        f'<main id="cards">\n{body}\n</main>'
        f"<script>{asset('gallery.js')}</script></body></html>\n"
    )


def write_gallery(run_dirs: list[Path], out_dir: Path, score_set: str | None = None, title: str = "Gallery") -> Path:
    """Write out_dir/gallery.html (and its thumbnails) over every finished image of `run_dirs`."""
    out_dir = Path(out_dir)
    cards = gallery_cards([Path(d) for d in run_dirs], score_set)
    path = out_dir / GALLERY
    atomic_write_bytes(path, gallery_html(cards, out_dir, title).encode())
    return path
