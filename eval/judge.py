"""A multimodal judge: two 0-4 ratings per generated image from an OpenAI-compatible chat endpoint.

DreamBench++ (Peng et al., 2025) rates subject-driven images on two separate axes with a multimodal
model and reports how well each automatic metric agrees with people. This module follows that
protocol with criteria written for this project:
    concept   the generated image against the subject's reference photo: is it the same subject?
    prompt    the generated image against its prompt: does it show what the text asks for?
Each rating is an integer 0-4 with the judge's one-sentence reason kept beside it.

Any endpoint that speaks the chat-completions API works (a hosted model, or a lab's own vLLM server):
`eval.judge.base_url`, `eval.judge.model`, and the API key from the environment variable named by
`eval.judge.api_key_env`. Every judgment is cached by what decides it (the image's and reference's
sha256, the prompt, the judge model, the template hash), one file per judgment written atomically,
so a rerun or a killed run asks nothing twice. A reply that does not parse is asked once more and,
if it still does not parse, recorded as `unparsed`, never scored. 429, 5xx, timeouts and dropped
connections are retried with exponential backoff; `eval.judge.max_requests` caps the HTTP requests
of one call, which then stops with one line saying how many judgments are left.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from monkey.atomic import atomic_write_json
from monkey.errors import ConfigError
from monkey.hashing import stable_hash

log = logging.getLogger(__name__)

ASPECTS = ("concept", "prompt")
JUDGE_COLUMNS = tuple(f"judge_{aspect}" for aspect in ASPECTS)  # score columns: judge_concept, judge_prompt
SCALE = (0, 4)
SYSTEM = (
    "You rate images made by a subject-driven text-to-image system. Answer with one JSON object and nothing "
    'else: {"score": <integer 0 to 4>, "reason": "<one short sentence>"}.'
)
# Our own criteria (DreamBench++'s protocol, not its wording). Changing a word changes TEMPLATE_HASH,
# so no cached judgment made with other criteria is reused.
CRITERIA = {
    "concept": (
        "The first image is a photo of a subject; the second was generated to show that same subject. Rate how "
        "well the second image keeps the subject's identity: its shape, colours, textures, markings and "
        "proportions. Ignore the background, the pose, the lighting and the image style.\n"
        "4: the same individual subject, every distinctive detail kept.\n"
        "3: clearly the same subject; one small detail differs.\n"
        "2: the same kind of subject with some of its features; several details differ.\n"
        "1: only the category matches (e.g. some dog, some backpack).\n"
        "0: the subject is missing or is something else."
    ),
    "prompt": (
        "The image was generated from this text: {prompt!r}. Rate how well the image shows what the text asks "
        "for: the setting, the objects and the actions named. Ignore image quality and whether the subject "
        "looks like any particular individual.\n"
        "4: everything the text asks for is shown.\n"
        "3: almost everything; one minor element is missing or off.\n"
        "2: the main element is there; a major part of the text is missing or wrong.\n"
        "1: only a trace of the text is recognisable.\n"
        "0: the image has nothing to do with the text."
    ),
}
TEMPLATE_HASH = stable_hash({"system": SYSTEM, "criteria": CRITERIA, "scale": SCALE})
STATUSES = ("ok", "unparsed")  # cached outcomes; a request that failed is not cached and is asked again
RETRYABLE_STATUS = {408, 409, 429} | set(range(500, 600))


@dataclass(frozen=True)
class JudgeSettings:
    """`eval.judge`, checked once where the config is read."""

    base_url: str
    model: str
    api_key_env: str = "MONKEY_JUDGE_API_KEY"
    max_requests: int | None = None  # HTTP requests per call (retries count); None: no cap
    concurrency: int = 4
    timeout_s: float = 60.0
    retries: int = 4  # after the first try, on 429/5xx/timeouts/dropped connections
    backoff_s: float = 1.0  # first wait; doubles each retry
    cache_dir: str | None = None  # None: $MONKEY_CACHE/judge

    @classmethod
    def from_config(cls, node: dict[str, Any]) -> JudgeSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(node) - known - {"enabled"})
        if unknown:
            raise ConfigError(f"eval.judge has unknown keys {unknown}; allowed: {sorted(known | {'enabled'})}")
        for key in ("base_url", "model"):
            if not node.get(key):
                raise ConfigError(f"eval.judge.{key} is not set (an OpenAI-compatible endpoint and its model name)")
        settings = cls(**{k: v for k, v in node.items() if k in known})
        checks = {
            "max_requests": settings.max_requests is None or int(settings.max_requests) >= 1,
            "concurrency": int(settings.concurrency) >= 1,
            "timeout_s": float(settings.timeout_s) > 0,
            "retries": int(settings.retries) >= 0,
            "backoff_s": float(settings.backoff_s) >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"eval.judge.{key}={getattr(settings, key)!r} is out of range")
        return settings

    def api_key(self) -> str:
        # a local vLLM server takes any key; the client library insists on one
        return os.environ.get(self.api_key_env) or "EMPTY"


@dataclass(frozen=True)
class JudgeRequest:
    """One rating to ask for: `aspect` of `image` (with the reference photo for `concept`)."""

    aspect: str
    image: Path
    image_sha256: str
    prompt: str
    reference: Path | None = None
    reference_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.aspect not in ASPECTS:
            raise ValueError(f"aspect {self.aspect!r}: choose one of {ASPECTS}")
        if self.aspect == "concept" and self.reference is None:
            raise ValueError("a concept rating needs the reference image")

    def key(self, model: str) -> str:
        """What decides the rating, hashed: the same image, reference, prompt, model and criteria give the
        same key, whichever run or method asks."""
        reference = self.reference_sha256 if self.aspect == "concept" else None
        prompt = self.prompt if self.aspect == "prompt" else None  # the concept rating never sees the prompt
        return stable_hash([self.aspect, self.image_sha256, reference, prompt, model, TEMPLATE_HASH], length=32)


@dataclass
class Judgment:
    key: str
    aspect: str
    status: str  # ok | unparsed
    score: int | None
    reason: str
    reply: str  # the judge's raw text (the last one, for unparsed)
    model: str
    template: str = TEMPLATE_HASH
    requests: int = 1


@dataclass
class JudgeReport:
    """What one call did: judgments by key, and what it could not do."""

    judgments: dict[str, Judgment] = field(default_factory=dict)
    cached: int = 0
    asked: int = 0  # HTTP requests sent
    failed: dict[str, str] = field(default_factory=dict)  # key -> last error (not cached: asked again next time)
    left: int = 0  # not asked: max_requests reached

    def score(self, request: JudgeRequest, model: str) -> int | None:
        judgment = self.judgments.get(request.key(model))
        return judgment.score if judgment is not None and judgment.status == "ok" else None


class JudgmentCache:
    """One JSON file per judgment (root/<key[:2]>/<key>.json), written atomically: a killed run leaves
    whole judgments or none."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{8,64}", key):
            raise ValueError(f"not a judgment key: {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Judgment | None:
        path = self.path(key)
        try:
            data = json.loads(path.read_text())
            judgment = Judgment(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as err:
            log.warning("judge cache: %s is unreadable (%s); it is asked again", path, err)
            return None
        return judgment if judgment.key == key and judgment.status in STATUSES else None

    def put(self, judgment: Judgment) -> None:
        atomic_write_json(self.path(judgment.key), asdict(judgment))


JSON_OBJECT = re.compile(r"\{.*\}", re.S)


def parse_rating(text: str) -> tuple[int, str] | None:
    """(score, reason) from the judge's reply, or None when it is not a rating on the scale: a JSON
    object with an integer `score` in 0..4 (code fences and text around it tolerated); nothing else."""
    match = JSON_OBJECT.search(text or "")
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    score = data.get("score") if isinstance(data, dict) else None
    if isinstance(score, bool) or not isinstance(score, int) or not SCALE[0] <= score <= SCALE[1]:
        return None
    reason = data.get("reason")
    return score, reason if isinstance(reason, str) else ""


def image_part(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower().lstrip(".")
    mime = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp"}.get(suffix, "png")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/{mime};base64,{data}"}}


def messages(request: JudgeRequest) -> list[dict[str, Any]]:
    """The chat for one rating: the criteria, then the reference photo (concept) and the generated image."""
    text = CRITERIA[request.aspect].format(prompt=request.prompt)
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if request.aspect == "concept":
        assert request.reference is not None
        content.append(image_part(request.reference))
    content.append(image_part(request.image))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


class RetryableError(Exception):
    """429, 5xx, a timeout or a dropped connection: worth asking again after a wait."""


class FatalError(Exception):
    """Any other refusal (401, 404, 400 ...): asking again will not help."""


class OpenAIChat:
    """The `openai` client pointed at `base_url`; its own retries are off so this module counts them."""

    def __init__(self, settings: JudgeSettings):
        import openai  # only where a judge is configured

        self.openai = openai
        self.client = openai.OpenAI(
            base_url=settings.base_url, api_key=settings.api_key(), timeout=settings.timeout_s, max_retries=0
        )
        self.model = settings.model

    def __call__(self, request: JudgeRequest, key: str) -> str:
        openai = self.openai
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=messages(request),
                temperature=0,
                max_tokens=200,
                extra_headers={"X-Judgment-Key": key},
            )
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            raise RetryableError(f"{type(err).__name__}: {err}") from err
        except openai.APIStatusError as err:
            kind = RetryableError if err.status_code in RETRYABLE_STATUS else FatalError
            raise kind(f"HTTP {err.status_code}: {str(err)[:200]}") from err
        choices = reply.choices or []
        return (choices[0].message.content or "") if choices else ""


Chat = Callable[[JudgeRequest, str], str]


class Budget:
    """The request cap shared by the worker threads."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.used = 0
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.limit is not None and self.used >= self.limit:
                return False
            self.used += 1
            return True


class BudgetSpent(Exception):
    pass


def judge(
    requests: Iterable[JudgeRequest],
    settings: JudgeSettings,
    cache: JudgmentCache,
    chat: Chat | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> JudgeReport:
    """Every rating of `requests`, from the cache where it is there, else from the judge."""
    report = JudgeReport()
    todo: dict[str, JudgeRequest] = {}
    for request in requests:
        key = request.key(settings.model)
        if key in report.judgments or key in todo:
            continue
        cached = cache.get(key)
        if cached is not None:
            report.judgments[key] = cached
            report.cached += 1
        else:
            todo[key] = request
    if not todo:
        return report
    chat = chat or OpenAIChat(settings)
    budget = Budget(settings.max_requests)
    lock = threading.Lock()

    def ask(key: str, request: JudgeRequest) -> None:
        """One judgment: up to two parsed attempts, each with its retries on retryable errors."""
        sent, reply = 0, ""
        for _ in range(2):  # a reply that does not parse is asked once more
            for attempt in range(settings.retries + 1):
                if not budget.take():
                    raise BudgetSpent
                sent += 1
                try:
                    reply = chat(request, key)
                    break
                except RetryableError as err:
                    if attempt == settings.retries:
                        raise RetryableError(f"{err} (after {attempt + 1} tries)") from err
                    sleep(settings.backoff_s * 2**attempt)
            parsed = parse_rating(reply)
            if parsed is not None:
                judgment = Judgment(
                    key, request.aspect, "ok", parsed[0], parsed[1], reply, settings.model, requests=sent
                )
                break
        else:
            judgment = Judgment(key, request.aspect, "unparsed", None, "", reply, settings.model, requests=sent)
        cache.put(judgment)
        with lock:
            report.judgments[key] = judgment

    def run(item: tuple[str, JudgeRequest]) -> None:
        key, request = item
        try:
            ask(key, request)
        except BudgetSpent:
            with lock:
                report.left += 1
        except (RetryableError, FatalError) as err:
            with lock:
                report.failed[key] = str(err)

    with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
        list(pool.map(run, todo.items()))
    report.asked = budget.used
    if report.left:
        log.warning(
            "eval.judge.max_requests=%d reached: %d of %d judgments left unasked; rerun to continue (the %d made "
            "are cached)",
            settings.max_requests,
            report.left,
            len(todo),
            len(todo) - report.left - len(report.failed),
        )
    if report.failed:
        first = next(iter(report.failed.values()))
        log.warning(
            "eval.judge: %d judgments failed (not cached, asked again next run); first: %s", len(report.failed), first
        )
    unparsed = sum(1 for j in report.judgments.values() if j.status == "unparsed")
    if unparsed:
        log.warning(
            "eval.judge: %d replies did not parse as a 0-4 rating twice; recorded as unparsed, not scored", unparsed
        )
    return report
