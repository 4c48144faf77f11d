"""The study's participant page and the report's gallery in a real browser (headless Debian chromium,
one session for the module): click through a participant page, export, tally the export back to the
clicks; open a gallery, filter it, check which images are visible and that they load from disk."""

import json
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser import start_browser
from monkey.eval.collect import find_run_dirs
from monkey.eval.gallery import write_gallery
from monkey.eval.score_store import ScoreSet
from study_helpers import METHODS, make_experiment, read_assignments, screens

from monkey.store import RunStore
from monkey.study.cli import default_paper_names
from monkey.study.questions import method_runs
from monkey.study.site import StudySpec, build_study
from monkey.study.table3 import paper_table3_path
from monkey.study.tally import TallySettings, tally_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    driver = start_browser(downloads)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("browser"), prompts=2)


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished_download(folder: Path, pattern: str) -> Path | None:
    """The downloaded file once chromium has written it whole (it may appear empty first)."""
    for path in folder.glob(pattern):
        try:
            json.loads(path.read_text())
            return path
        except ValueError:
            return None
    return None


INTENT = {"dreambooth": "monkey", "magic": "masactrl"}  # the method the simulated participant prefers


def test_participant_page_clicks_export_and_tally_back(browser, experiment, downloads, tmp_path):
    study = tmp_path / "study"
    runs = method_runs(find_run_dirs([experiment]), list(METHODS))
    build_study(runs, StudySpec(questions_per_dataset=2, participants=3, attention_checks=1, seed=3), study)
    plan = {s["screen"]: (q, s) for (p, q), s in screens(study).items() if p == "p02"}
    images = {  # (screen, position) -> site image path, from assignments.csv
        (int(row["screen"]), int(row["position"])): row["image"]
        for row in read_assignments(study)
        if row["participant"] == "p02"
    }

    browser.get((study / "site" / "p02.html").as_uri())
    browser.find_element("id", "start").click()
    clicked = {}
    for number in range(1, len(plan) + 1):
        assert browser.find_element("id", "progress").text == f"Question {number} of {len(plan)}"
        question, screen = plan[number]
        shown = [
            o.find_element("tag name", "img").get_attribute("src")
            for o in browser.find_elements("css selector", ".option")
        ]
        assert [unquote(s).split("/site/")[1] for s in shown] == [images[(number, i)] for i in range(len(shown))]
        assert browser.find_element("id", "next").get_attribute("disabled")  # no answer, no next
        target = (
            screen["options"].index("source-duplicate")
            if screen["kind"] == "attention"
            else screen["options"].index(INTENT[screen["dataset"]])
        )
        if number == 2:  # change of mind: the last click counts
            browser.find_element("id", f"option-{(target + 1) % 3}").click()
        browser.find_element("id", f"option-{target}").click()
        assert "selected" in browser.find_element("id", f"option-{target}").get_attribute("class")
        clicked[question] = target
        browser.find_element("id", "next").click()
        if number == 3:  # a reload resumes where the participant was, answers kept
            browser.refresh()
            assert browser.find_element("id", "progress").text == f"Question 4 of {len(plan)}"

    assert browser.find_element("id", "done").is_displayed()
    browser.find_element("id", "export").click()
    path = wait_for(lambda: finished_download(downloads, "*-p02.json"), what="the exported file")
    exported = json.loads(path.read_text())
    assert {a["question"]: a["choice"] for a in exported["answers"]} == clicked
    assert (
        json.loads(browser.find_element("id", "export-text").get_attribute("value"))["answers"] == exported["answers"]
    )

    result = tally_study(
        study, [path], TallySettings(resamples=200, bt_resamples=5), default_paper_names(), paper_table3_path()
    )
    assert result.counts.loc["dreambooth"].to_dict() == {"monkey": 2, "ip_adapter_1.0": 0, "masactrl": 0}
    assert result.counts.loc["magic"].to_dict() == {"monkey": 0, "ip_adapter_1.0": 0, "masactrl": 2}
    assert set(result.exclusions["reason"]) == {"no response"}  # p01, p03: nothing else left out


def test_gallery_filters_to_one_method_and_its_images_load(browser, experiment, tmp_path):
    run_dirs = find_run_dirs([experiment])
    for run_dir in run_dirs:  # a score set as the evaluator writes it: one record per image
        scores = ScoreSet(run_dir, "tiny")
        for row in RunStore(run_dir).rows():
            scores.write({"method": row["method"], "item_id": row["item_id"], "scores": {"clip_t": 0.25, "dino": 0.5}})
    out = tmp_path / "report"
    gallery = write_gallery(run_dirs, out, "tiny")
    browser.get(gallery.as_uri())
    cards = browser.find_elements("css selector", ".card")
    assert len(cards) == 3 * 2 * 2 * 2  # methods x datasets x subjects x prompts

    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "filter-method")).select_by_value("monkey")
    visible = [c for c in cards if c.is_displayed()]
    assert len(visible) == 8 and {c.get_attribute("data-method") for c in visible} == {"monkey"}
    assert browser.find_element("id", "shown").text == "8 of 24 images"
    expected = {r["item_id"] for r in RunStore(experiment / "monkey").rows()}
    assert {c.get_attribute("data-item") for c in visible} == expected
    for card in visible:
        browser.execute_script("arguments[0].scrollIntoView()", card)
        image, overlay = (
            card.find_element("css selector", "img.image"),
            card.find_element("css selector", "img.overlay"),
        )
        for img in (image, overlay):  # lazy thumbnails load from disk once in view
            wait_for(
                lambda img=img: browser.execute_script("return arguments[0].naturalWidth", img) > 0, what="a thumbnail"
            )
        full = Path(unquote(urlparse(card.find_element("css selector", "a").get_attribute("href")).path))
        item = card.get_attribute("data-item").split("/")  # the link is the manifest's image of that item
        assert full.is_file() and full.name == f"{item[2]}_{item[3]}_{item[4]}.png" and "/monkey/images/" in str(full)
        assert "clip_t 0.250" in card.text and "seed" in card.text

    Select(browser.find_element("id", "filter-subject")).select_by_value("beta")
    Select(browser.find_element("id", "filter-dataset")).select_by_value("magic")
    prompt = Select(browser.find_element("id", "filter-prompt"))
    prompt.select_by_value("beta in the jungle")
    visible = [c for c in cards if c.is_displayed()]
    assert [(c.get_attribute("data-item"), c.get_attribute("data-method")) for c in visible] == [
        ("magic/beta/00/p00/s0", "monkey")
    ]
    Select(browser.find_element("id", "filter-method")).select_by_value("")
    assert sorted(c.get_attribute("data-method") for c in cards if c.is_displayed()) == sorted(METHODS)
