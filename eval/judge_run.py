"""The judge over a run folder's scored images: `judge_concept` and `judge_prompt` beside the metrics.

For every generated image scored in scores/<eval.name>/, the judge (monkey.eval.judge) rates concept
preservation against the image's source photo (the 1:1 reference of the paper's columns) and prompt
following against the exact prompt the image was made from. The two ratings go to
scores/<eval.name>/judge/<method>/<item_id>.json with the judgment keys they came from, and
ScoreSet.frame() adds them as columns of that image's row, so scores.csv, Table 1 and the bootstrap
intervals treat them like any other metric. A rating left undone (request cap, failures) or unparsed
is None there, never a score; the next evaluate asks again for what failed or was left.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from monkey.eval.judge import JudgeReport, JudgeRequest, JudgeSettings, JudgmentCache, judge
from monkey.eval.score_store import ORACLE, ScoreSet

from monkey.paths import cache_dir

log = logging.getLogger(__name__)


def judge_settings(eval_cfg: dict[str, Any]) -> JudgeSettings | None:
    """`eval.judge` as settings, or None when no judge is configured (absent, null or `enabled: false`)."""
    node = eval_cfg.get("judge")
    if not node or not node.get("enabled", False):
        return None
    return JudgeSettings.from_config(dict(node))


def requests_of(run_dir: Path, record: dict[str, Any]) -> dict[str, JudgeRequest]:
    image = run_dir / record["image"]
    common = {"image": image, "image_sha256": record["image_sha256"], "prompt": record["prompt"]}
    return {
        "concept": JudgeRequest(
            "concept", reference=Path(record["source_path"]), reference_sha256=record["source_sha256"], **common
        ),
        "prompt": JudgeRequest("prompt", **common),
    }


def judge_run(run_dir: str | Path, eval_name: str, settings: JudgeSettings, item_ids: set[str] | None = None) -> int:
    """Rate the scored images of `run_dir` (only `item_ids` when given); returns the records written."""
    run_dir = Path(run_dir)
    score_set = ScoreSet(run_dir, eval_name)
    records = [
        r for r in score_set.records() if r["method"] != ORACLE and (item_ids is None or r["item_id"] in item_ids)
    ]
    todo: list[tuple[dict[str, Any], dict[str, JudgeRequest]]] = []
    for record in records:
        requests = requests_of(run_dir, record)
        keys = {aspect: request.key(settings.model) for aspect, request in requests.items()}
        done = score_set.read_judge(record["method"], record["item_id"])
        if done is None or done.get("keys") != keys or not set(done.get("status", {}).values()) <= {"ok", "unparsed"}:
            todo.append((record, requests))
    log.info(
        "judge %s: %d images, %d to rate (%s at %s)",
        run_dir,
        len(records),
        len(todo),
        settings.model,
        settings.base_url,
    )
    if not todo:
        return 0
    cache = JudgmentCache(Path(settings.cache_dir) if settings.cache_dir else cache_dir() / "judge")
    report = judge([request for _, requests in todo for request in requests.values()], settings, cache)
    for record, requests in todo:
        score_set.write_judge(judge_record(record, requests, report, settings))
    return len(todo)


def judge_record(
    record: dict[str, Any], requests: dict[str, JudgeRequest], report: JudgeReport, settings: JudgeSettings
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "method": record["method"],
        "item_id": record["item_id"],
        "image_sha256": record["image_sha256"],
        "judge_model": settings.model,
        "keys": {},
        "status": {},
        "reasons": {},
    }
    for aspect, request in requests.items():
        key = request.key(settings.model)
        judgment = report.judgments.get(key)
        out["keys"][aspect] = key
        out["status"][aspect] = judgment.status if judgment else ("failed" if key in report.failed else "left")
        out["reasons"][aspect] = judgment.reason if judgment else report.failed.get(key, "")
        out[f"judge_{aspect}"] = judgment.score if judgment is not None and judgment.status == "ok" else None
    return out
