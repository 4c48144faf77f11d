"""gallery.html: one static page per report to compare methods image by image rather than read a CSV.

One aligned row per item (subject x prompt x seed): its subject photo, prompt and seed once, then a
column per method (every cell the same width) with the image (lazy thumbnail, linking the full image),
its scores (each once: `<m>_all` only where the subject has more than one photo, else it repeats `<m>`),
a link to the config the image was made with and, for MONKEY, its mask overlay behind a switch.
Selects filter the rows by dataset, subject and location (the locations offered narrow to the chosen
subject's), show one method's column or all, and sort the rows by any method's metric. The page is one
HTML file with its CSS and JS inline, thumbnails in gallery/ beside it, and full images and configs
linked by relative path, so it opens from the file system.

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
from monkey.eval.index_page import config_path
from monkey.eval.score_store import ScoreSet
from PIL import Image

from monkey.atomic import atomic_write_bytes
from monkey.errors import DataError
from monkey.hashing import stable_hash
from monkey.images import AS_STORED, load_rgb
from monkey.store import STATUS_OK, RunStore

GALLERY = "gallery.html"
THUMBS = "gallery"
THUMB_SIZE = 192
SOURCE_SIZE = 72
ROW_FILTERS = ("dataset", "subject", "location")  # select the rows; `method` selects a column
ALL_SUFFIX = "_all"


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
    location: str = ""
    config: Path | None = None  # <run folder>/configs/<method>-<hash>.json, when the folder holds it


def asset(name: str) -> str:
    return resources.files("monkey.eval").joinpath("assets", name).read_text()


def shown_once(scores: dict[str, float], n_refs: int | None) -> dict[str, float]:
    """The scores to show: `<m>_all` is left out where it repeats `<m>` (one reference photo)."""
    out = {}
    for name, value in scores.items():
        base = scores.get(name.removesuffix(ALL_SUFFIX)) if name.endswith(ALL_SUFFIX) else None
        if base is not None and ((n_refs is not None and n_refs <= 1) or value == base):
            continue
        out[name] = value
    return out


def score_records(run_dir: Path, score_set: str | None) -> dict[tuple[str, str], dict[str, float]]:
    """(method, item_id) -> the image's scores to show, from the folder's score set (empty when it has none)."""
    if not score_set:
        return {}
    return {
        (r["method"], r["item_id"]): shown_once(r.get("scores", {}), r.get("n_refs"))
        for r in ScoreSet(run_dir, score_set).records()
    }


def config_file(run_dir: Path, method: str, config_hash: object) -> Path | None:
    if not isinstance(config_hash, str) or not config_hash:
        return None
    path = config_path(str(run_dir), method, config_hash)
    return path if path.is_file() else None


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
                location=str(row.get("location") or ""),
                config=config_file(run_dir, row["method"], row.get("config_hash")),
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


def card_html(card: Card, out_dir: Path, thumb, row_seed: int | None = None) -> str:
    """One method's cell of an item row: image, scores (data-score-* for sorting), config, overlay; its
    seed too where it is not the row's (preset=paper: a method's own seed)."""
    e = html.escape
    numbers = {k: v for k, v in card.scores.items() if isinstance(v, int | float)}
    data = " ".join(f'data-score-{e(k)}="{v:.6g}"' for k, v in numbers.items())
    scores = " · ".join(f"{e(k)} {v:.3f}" for k, v in numbers.items())
    overlay = (
        f'<a class="overlay" href="{link(card.overlay, out_dir)}"><img class="overlay" loading="lazy" '
        f'src="{thumb(card.overlay, THUMB_SIZE)}" alt="mask overlay" title="MONKEY mask overlay"></a>'
        if card.overlay and card.overlay.is_file()
        else ""
    )
    config = f' · <a class="config" href="{link(card.config, out_dir)}">config</a>' if card.config else ""
    if row_seed is not None and card.seed != row_seed:
        scores = f"seed {card.seed} · {scores}" if scores else f"seed {card.seed}"
    return (
        f'<td class="card" data-method="{e(card.method)}" data-item="{e(card.item_id)}" {data}>'
        f'<a class="image" href="{link(card.image, out_dir)}"><img class="image" loading="lazy" '
        f'src="{thumb(card.image, THUMB_SIZE)}" alt="{e(card.method)}: {e(card.prompt)}"></a>{overlay}'
        f'<div class="scores">{scores}{config}</div></td>'
    )


def row_html(cards: list[Card], methods: list[str], out_dir: Path, thumb) -> str:
    """One item: subject photo, prompt and seed once, then a cell per method (empty where it has no image)."""
    e = html.escape
    first = cards[0]
    by_method = {card.method: card for card in cards}
    data = " ".join(f'data-{key}="{e(str(getattr(first, key)))}"' for key in ROW_FILTERS)
    head = (
        f'<th class="item"><img class="source" loading="lazy" src="{thumb(first.source, SOURCE_SIZE)}" '
        f'alt="subject photo" title="subject photo"><br>{e(first.dataset)}/{e(first.subject)} · seed {first.seed}'
        f"<br><q>{e(first.prompt)}</q></th>"
    )
    empty = '<td class="empty" data-method="{}"></td>'
    cells = "".join(
        card_html(by_method[m], out_dir, thumb, first.seed) if m in by_method else empty.format(e(m)) for m in methods
    )
    return f'<tr class="item" data-item="{e(first.item_id)}" {data}>{head}{cells}</tr>'


def select_html(key: str, values: list[str], label: str | None = None) -> str:
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    select = f'<select id="filter-{key}" data-key="{key}"><option value="">all</option>{options}</select>'
    return f"<label>{label or key} {select}</label>"


def sort_html(cards: list[Card], methods: list[str]) -> str:
    """Sort by <metric> of <method>: every pair some image has a score for."""
    metrics = sorted({k for c in cards for k in c.scores})
    pairs = [(m, k) for m in methods for k in metrics if any(c.method == m and k in c.scores for c in cards)]
    options = "".join(
        f'<option value="{html.escape(k)}" data-method="{html.escape(m)}">{html.escape(k)} of {html.escape(m)}</option>'
        for m, k in pairs
    )
    return f'<label>sort <select id="sort"><option value="">plan order</option>{options}</select></label>'


def gallery_html(cards: list[Card], out_dir: Path, title: str) -> str:
    thumb = Thumbnails(out_dir)
    methods = sorted({c.method for c in cards})
    rows: dict[tuple[str, str], list[Card]] = {}
    for card in cards:  # already in (dataset, subject, item_id) order
        rows.setdefault((card.dataset, card.item_id), []).append(card)
    body = "\n".join(row_html(group, methods, out_dir, thumb) for group in rows.values())
    filters = " ".join(select_html(k, sorted({str(getattr(c, k)) for c in cards})) for k in ROW_FILTERS)
    filters += " " + select_html("method", methods, "method column")
    switch = '<label><input type="checkbox" id="overlay"> MONKEY mask overlay</label>'
    header = "".join(f'<th class="method" data-method="{html.escape(m)}">{html.escape(m)}</th>' for m in methods)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{asset('gallery.css')}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><nav>{filters} {sort_html(cards, methods)} {switch} "
        '<span id="shown"></span></nav></header>'
        f'<main><table id="grid"><thead><tr><th class="item">item</th>{header}</tr></thead><tbody id="rows">\n'
        f"{body}\n</tbody></table></main><script>{asset('gallery.js')}</script></body></html>\n"
    )


def write_gallery(run_dirs: list[Path], out_dir: Path, score_set: str | None = None, title: str = "Gallery") -> Path:
    """Write out_dir/gallery.html (and its thumbnails) over every finished image of `run_dirs`."""
    out_dir = Path(out_dir)
    cards = gallery_cards([Path(d) for d in run_dirs], score_set)
    path = out_dir / GALLERY
    atomic_write_bytes(path, gallery_html(cards, out_dir, title).encode())
    return path
