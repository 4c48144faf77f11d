"""The multimodal judge (monkey.eval.judge) against a fake OpenAI-compatible server on 127.0.0.1:
ratings parsed and cached by content, nothing asked twice, malformed replies retried once and never
scored, 429/500/timeouts retried with backoff, a request cap that stops with one line, and a killed
run that loses nothing.

Planted bugs each caught here: the reference and generated images in the other order (messages);
the prompt left out of the prompt-rating's key (cache key); an unparsed reply cached as a score of 0;
no second try for a malformed reply; a 429 treated as fatal; a failed request cached."""

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from judge_server import FakeJudgeServer, rating
from monkey.eval.judge import JudgeRequest, JudgeSettings, JudgmentCache, image_part, judge, parse_rating
from PIL import Image

from monkey.errors import ConfigError
from monkey.hashing import file_sha256

MODEL = "fake-vlm"


def picture(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (8, 8), colour).save(path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    return {
        name: picture(tmp_path / f"{name}.png", colour)
        for name, colour in [("ref", (200, 10, 10)), ("a", (10, 200, 10)), ("b", (10, 10, 200)), ("c", (90, 90, 90))]
    }


def requests_for(images: dict[str, Path], names=("a", "b", "c")) -> list[JudgeRequest]:
    ref = images["ref"]
    out = []
    for name in names:
        image = images[name]
        common = dict(image=image, image_sha256=file_sha256(image), prompt=f"a dog in the jungle {name}")
        out.append(JudgeRequest("concept", reference=ref, reference_sha256=file_sha256(ref), **common))
        out.append(JudgeRequest("prompt", **common))
    return out


def settings(server: FakeJudgeServer, **extra) -> JudgeSettings:
    return JudgeSettings(base_url=server.base_url, model=MODEL, **{"concurrency": 2, "timeout_s": 5, **extra})


def no_sleep(_: float) -> None:
    pass


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 3, "reason": "same dog"}', (3, "same dog")),
        ('```json\n{"score": 0, "reason": "no dog"}\n```', (0, "no dog")),
        ('Here you go: {"score": 4}', (4, "")),
        ('{"score": 5, "reason": "off the scale"}', None),
        ('{"score": -1}', None),
        ('{"score": 2.5}', None),
        ('{"score": "3"}', None),
        ('{"score": true}', None),
        ("Score: 3", None),
        ("", None),
        ("{not json}", None),
    ],
)
def test_only_an_integer_on_the_0_to_4_scale_is_a_rating(reply, expected):
    assert parse_rating(reply) == expected


def test_each_rating_is_asked_once_with_the_right_images_and_then_served_from_the_cache(images, tmp_path):
    cache = JudgmentCache(tmp_path / "cache")
    requests = requests_for(images)
    with FakeJudgeServer(default={"concept": 3, "prompt": 1}) as server:
        report = judge(requests, settings(server), cache, sleep=no_sleep)
        assert report.asked == 6 and report.cached == 0 and not report.failed
        assert sorted(server.keys()) == sorted(r.key(MODEL) for r in requests)  # each once
        for request in requests:
            assert report.score(request, MODEL) == (3 if request.aspect == "concept" else 1)
        by_key = {entry["key"]: entry for entry in server.log}
        for request in requests:  # what the judge saw: reference first, then the generated image
            entry = by_key[request.key(MODEL)]
            assert entry["model"] == MODEL and entry["aspect"] == request.aspect
            expected = [request.reference, request.image] if request.aspect == "concept" else [request.image]
            assert entry["images"] == [image_part(path)["image_url"]["url"] for path in expected]
            assert (request.prompt in entry["text"]) == (request.aspect == "prompt")
        again = judge(requests + requests_for(images, names=("a",)), settings(server), cache, sleep=no_sleep)
        assert again.asked == 0 and again.cached == 6 and len(server.log) == 6
        assert {k: j.score for k, j in again.judgments.items()} == {k: j.score for k, j in report.judgments.items()}


def test_the_key_is_what_decides_the_rating(images):
    concept, prompt = requests_for(images, names=("a",))
    other_prompt = JudgeRequest("prompt", images["a"], prompt.image_sha256, "a dog in the snow")
    assert prompt.key(MODEL) != other_prompt.key(MODEL)  # another prompt: another prompt-rating
    concept_other_prompt = JudgeRequest(
        "concept", images["a"], concept.image_sha256, "a dog in the snow", images["ref"], concept.reference_sha256
    )
    assert concept.key(MODEL) == concept_other_prompt.key(MODEL)  # the concept rating never sees the prompt
    assert concept.key(MODEL) != concept.key("another-vlm")
    other_ref = JudgeRequest("concept", images["a"], concept.image_sha256, concept.prompt, images["b"], "0" * 64)
    assert concept.key(MODEL) != other_ref.key(MODEL)


def test_a_malformed_reply_is_asked_once_more_and_then_recorded_unparsed_never_scored(images, tmp_path, caplog):
    requests = requests_for(images, names=("a",))
    concept, prompt = (r.key(MODEL) for r in requests)
    cache = JudgmentCache(tmp_path / "cache")
    with FakeJudgeServer() as server:
        server.script[concept].extend([("reply", "a lovely dog"), ("reply", rating(4, "same"))])
        server.script[prompt].extend([("reply", "no idea"), ("reply", '{"score": 9}')])
        with caplog.at_level(logging.WARNING):
            report = judge(requests, settings(server), cache, sleep=no_sleep)
        ok, unparsed = report.judgments[concept], report.judgments[prompt]
        assert (ok.status, ok.score, ok.reason, ok.requests) == ("ok", 4, "same", 2)
        assert (unparsed.status, unparsed.score, unparsed.reply, unparsed.requests) == (
            "unparsed",
            None,
            '{"score": 9}',
            2,
        )
        assert report.score(requests[1], MODEL) is None
        assert "1 replies did not parse" in caplog.text
        assert judge(requests, settings(server), cache, sleep=no_sleep).asked == 0  # recorded: not asked again
        assert len(server.log) == 4


def test_429_500_and_a_timeout_are_retried_with_backoff(images, tmp_path):
    requests = requests_for(images, names=("a", "b"))
    keys = [r.key(MODEL) for r in requests]
    waits: list[float] = []
    with FakeJudgeServer() as server:
        server.script[keys[0]].extend([("status", 429)])
        server.script[keys[1]].extend([("status", 500), ("status", 503)])
        server.script[keys[2]].extend([("sleep", 1.5)])  # past the client's 0.5 s timeout
        server.script[keys[3]].extend([("status", 401)])  # not worth a retry
        report = judge(
            requests,
            settings(server, timeout_s=0.5, backoff_s=0.25, concurrency=1),
            JudgmentCache(tmp_path),
            sleep=waits.append,
        )
        assert [report.judgments[k].requests for k in keys[:3]] == [2, 3, 2]
        assert [report.judgments[k].status for k in keys[:3]] == ["ok"] * 3
        assert waits == [0.25, 0.25, 0.5, 0.25]  # doubling per retry of one judgment
        assert keys[3] not in report.judgments and "HTTP 401" in report.failed[keys[3]]
        assert server.keys().count(keys[3]) == 1


def test_a_failed_judgment_is_not_cached_and_the_next_run_asks_again(images, tmp_path):
    requests = requests_for(images, names=("a",))
    key = requests[0].key(MODEL)
    cache = JudgmentCache(tmp_path)
    with FakeJudgeServer() as server:
        server.script[key].extend([("status", 500)] * 3)
        report = judge(requests, settings(server, retries=2), cache, sleep=no_sleep)
        assert "after 3 tries" in report.failed[key] and cache.get(key) is None
        again = judge(requests, settings(server, retries=2), cache, sleep=no_sleep)
        assert again.judgments[key].score == 3 and again.asked == 1


def test_max_requests_stops_with_one_line_and_a_rerun_does_the_rest(images, tmp_path, caplog):
    requests = requests_for(images)
    cache = JudgmentCache(tmp_path)
    with FakeJudgeServer() as server:
        with caplog.at_level(logging.WARNING):
            first = judge(requests, settings(server, max_requests=4, concurrency=1), cache, sleep=no_sleep)
        assert (first.asked, len(first.judgments), first.left) == (4, 4, 2)
        (line,) = [r.getMessage() for r in caplog.records if "max_requests" in r.getMessage()]
        assert "eval.judge.max_requests=4 reached: 2 of 6 judgments left unasked" in line
        rest = judge(requests, settings(server), cache, sleep=no_sleep)
        assert (rest.cached, rest.asked, len(rest.judgments)) == (4, 2, 6)
        assert sorted(server.keys()) == sorted(r.key(MODEL) for r in requests)  # nothing asked twice


def test_a_killed_run_loses_nothing_and_asks_nothing_twice(images, tmp_path):
    requests = requests_for(images)
    cache_dir = tmp_path / "cache"
    with FakeJudgeServer(delay_s=0.4) as server:
        spec = {
            "settings": {"base_url": server.base_url, "model": MODEL, "concurrency": 1},
            "cache": str(cache_dir),
            "requests": [
                {**r.__dict__, "image": str(r.image), "reference": r.reference and str(r.reference)} for r in requests
            ],
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        script = (
            "import json, sys; from pathlib import Path; from monkey.eval.judge import *; "
            "s = json.loads(Path(sys.argv[1]).read_text()); "
            "reqs = [JudgeRequest(**{**r, 'image': Path(r['image']), "
            "'reference': r['reference'] and Path(r['reference'])}) for r in s['requests']]; "
            "judge(reqs, JudgeSettings(**s['settings']), JudgmentCache(Path(s['cache'])))"
        )
        child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "spec.json")])
        deadline = time.time() + 60
        while time.time() < deadline and len(list(cache_dir.rglob("*.json"))) < 2:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        kept = {path.stem for path in cache_dir.rglob("*.json")}
        assert 2 <= len(kept) < 6 and not list(cache_dir.rglob("*.tmp"))
        asked_before = server.keys()
        report = judge(requests, settings(server), JudgmentCache(cache_dir), sleep=no_sleep)
        assert len(report.judgments) == 6 and report.cached == len(kept)
        asked_after = server.keys()[len(asked_before) :]
        assert not set(asked_after) & kept  # what was answered before the kill is never asked again
        assert len(asked_before) + len(asked_after) <= 7  # at most the one in flight at the kill, twice


def test_settings_are_checked_with_one_line():
    with pytest.raises(ConfigError, match=r"eval.judge.base_url is not set"):
        JudgeSettings.from_config({"model": "m"})
    with pytest.raises(ConfigError, match=r"eval.judge has unknown keys \['tmperature'\]"):
        JudgeSettings.from_config({"base_url": "http://x", "model": "m", "tmperature": 0})
    with pytest.raises(ConfigError, match=r"eval.judge.concurrency=0 is out of range"):
        JudgeSettings.from_config({"base_url": "http://x", "model": "m", "concurrency": 0})


def image_rating(url: str) -> int:
    """A rating that follows the image's bytes, computed the same way here and in the fake server."""
    return int(hashlib.sha256(url.encode()).hexdigest(), 16) % 5


def test_evaluate_fills_judge_columns_of_the_right_rows_in_scores_and_table1(tmp_path):
    """Through the report (evaluate, collect, Table 1) on tiny backbones: each row's judge_concept is the
    judge's rating of that row's own image with its own source photo, judge_prompt of its own prompt."""
    from conftest import compose_config
    from eval_helpers import fake_generate, make_dataset, plan_items
    from monkey.eval.report import build_report

    dataset = make_dataset(tmp_path / "data")
    items = plan_items(dataset, prompts=2)
    experiment = tmp_path / "runs" / "x"
    for method in ("ip_adapter_1.0", "text_only"):
        fake_generate(experiment / method, items, method)

    def rate(entry):  # concept: the pair (reference, generated); prompt: the generated image and the text
        return image_rating("".join(entry["images"]) + (entry["text"] if entry["aspect"] == "prompt" else ""))

    with FakeJudgeServer(rate=rate) as server:
        judge = [
            f"eval.judge.{k}={v}"
            for k, v in {
                "enabled": "true",
                "base_url": server.base_url,
                "model": MODEL,
                "cache_dir": tmp_path / "jc",
            }.items()
        ]
        cfg = compose_config(*judge)
        report = build_report([experiment], experiment / "report", cfg.eval, dataset_cfg=dataset)
        asked = len(server.log)
        build_report([experiment], experiment / "report2", cfg.eval, dataset_cfg=dataset)
        assert len(server.log) == asked == 2 * 2 * len(items)  # 2 methods x 2 ratings per image, then none
    scores = report.scores[report.scores["method"] != "oracle"]
    assert len(scores) == 2 * len(items)
    for row in scores.itertuples():
        image = experiment / row.method / row.image
        generated = image_part(image)["image_url"]["url"]
        source = image_part(Path(row.source_path))["image_url"]["url"]
        assert row.judge_concept == image_rating(source + generated)
        prompt_text = next(e["text"] for e in server.log if e["aspect"] == "prompt" and e["images"] == [generated])
        assert repr(row.prompt) in prompt_text
        assert row.judge_prompt == image_rating(generated + prompt_text)
    oracle = report.scores[report.scores["method"] == "oracle"]
    assert oracle["judge_concept"].isna().all()  # the real photo is never judged
    table = (experiment / "report" / "table1.md").read_text()
    assert "Judge: concept (0-4)" in table and "Judge: prompt (0-4)" in table


def test_a_rating_of_other_image_bytes_is_never_shown(tmp_path):
    """A regenerated image keeps its old judge file until it is rated again: the frame shows no rating."""
    from monkey.eval.score_store import ScoreSet

    scores = ScoreSet(tmp_path, "default")
    base = {"method": "monkey", "item_id": "dreambooth/dog/00/p00/s0", "scores": {"clip_t": 0.3}}
    scores.write({**base, "image_sha256": "a" * 64})
    scores.write_judge({**base, "image_sha256": "a" * 64, "judge_model": MODEL, "judge_concept": 4, "judge_prompt": 1})
    assert scores.frame()[["judge_concept", "judge_prompt"]].values.tolist() == [[4.0, 1.0]]
    scores.write({**base, "image_sha256": "b" * 64})  # the image was made again
    assert "judge_concept" not in scores.frame() or scores.frame()["judge_concept"].isna().all()
