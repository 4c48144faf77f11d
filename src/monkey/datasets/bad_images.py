"""`dataset.on_bad_image`: stop at an unusable subject image (naming it), or skip its items and say so.

The runner asks the gate about each batch before the method sees it. An image is checked once per
run by `Source.load_image`, the same code every method uses, so "usable" means exactly "a method
can load it". Under `skip` each skipped item gets a manifest row with status "skipped" and the
error; `RunStore.finished` does not count it, so a rerun checks the image again (a fixed file is
then generated) and writes a new row only when the error changed.
"""

import time
from typing import Any

from monkey.datasets.base import Source
from monkey.images import BadImageError
from monkey.plan import WorkItem
from monkey.store import STATUS_SKIPPED, RunStore


class ImageGate:
    def __init__(self, policy: str):
        self.policy = policy  # "error" or "skip" (checked by monkey.datasets.base.bad_image_policy)
        self.errors: dict[str, BadImageError | None] = {}  # source_id -> its error (None: usable)

    def error_for(self, source: Source) -> BadImageError | None:
        if source.source_id not in self.errors:
            try:
                source.load_image()
                self.errors[source.source_id] = None
            except BadImageError as err:
                if self.policy == "error":
                    raise BadImageError(
                        err.path, f"{err.reason} (source {source.source_id}; dataset.on_bad_image=skip skips it)"
                    ) from err
                self.errors[source.source_id] = err
        return self.errors[source.source_id]

    def split(self, items: list[WorkItem]) -> tuple[list[WorkItem], list[tuple[WorkItem, BadImageError]]]:
        """(items whose image is usable, (item, error) for the rest); raises under policy "error"."""
        usable, skipped = [], []
        for item in items:
            error = self.error_for(item.source)
            if error is None:
                usable.append(item)
            else:
                skipped.append((item, error))
        return usable, skipped


def recorded_skips(store: RunStore, method: str) -> dict[str, str]:
    """item_id -> error of the items whose latest row says skipped."""
    return {row["item_id"]: row.get("error", "") for row in store.rows(method) if row.get("status") == STATUS_SKIPPED}


def skipped_row(item: WorkItem, error: BadImageError, method: str, context: dict[str, Any], plan_index: int) -> dict:
    """A manifest row for an item that was not generated: same keys as an ok row, no image."""
    return {
        **item.describe(),
        **context,
        "method": method,
        "prompt": None,
        "height": None,
        "width": None,
        "image": None,
        "artifacts": {},
        "status": STATUS_SKIPPED,
        "error": str(error),
        "info": {},
        "timings": {},
        "plan_index": plan_index,
        "created": time.time(),
    }
