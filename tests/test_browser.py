"""The study's participant page and the report's gallery in a real browser (headless Debian chromium,
one session for the module): click through a participant page, export, tally the export back to the
clicks; open a gallery: its rows and columns, filters, sorting, overlay switch, and that images load from disk."""

import json
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser import start_browser
from eval_helpers import fake_generate
from monkey.eval.collect import find_run_dirs
from monkey.eval.gallery import write_gallery
from monkey.eval.score_store import ScoreSet
from study_helpers import METHODS, make_experiment, read_assignments, screens, two_dataset_items

from monkey.hashing import stable_hash
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


@pytest.fixture(scope="module")
def gallery_experiment(tmp_path_factory) -> Path:
    """The three methods on both datasets; alpha with 3 locations, beta with 2 (so the location filter must
    narrow with the subject); score records with clip_i_all (alpha has two photos, beta one); configs."""
    root = tmp_path_factory.mktemp("gallery")
    items = [i for i in two_dataset_items(root, prompts=3) if i.source.subject == "alpha" or i.prompt_index < 2]
    experiment = root / "exp"
    for method in METHODS:
        fake_generate(experiment / method, items, method, overlay=method == "monkey")
        RunStore(experiment / method).register_config(method, "test", {"method": method})  # the rows' config_hash
        scores = ScoreSet(experiment / method, "tiny")
        for row in RunStore(experiment / method).rows():
            made_up = [int(stable_hash([method, row["item_id"], k], 6), 16) / 16**6 for k in range(3)]
            n_refs = 2 if row["subject"] == "alpha" else 1
            values = {
                "clip_t": made_up[0],
                "clip_i": made_up[1],
                "clip_i_all": made_up[2] if n_refs > 1 else made_up[1],
            }
            scores.write({"method": method, "item_id": row["item_id"], "n_refs": n_refs, "scores": values})
    return experiment


def shown(browser, css: str) -> list:
    return [e for e in browser.find_elements("css selector", css) if e.is_displayed()]


def test_gallery_rows_columns_filters_sorting_and_overlay(browser, gallery_experiment, tmp_path):
    from selenium.webdriver.support.ui import Select

    experiment = gallery_experiment
    rows = {m: {r["item_id"]: r for r in RunStore(experiment / m).rows()} for m in METHODS}
    records = {m: {r["item_id"]: r["scores"] for r in ScoreSet(experiment / m, "tiny").records()} for m in METHODS}
    items = sorted(rows["monkey"])
    gallery = write_gallery(find_run_dirs([experiment]), tmp_path / "report", "tiny")
    browser.get(gallery.as_uri())
    assert len(items) == 2 * (3 + 2)  # datasets x (alpha's 3 + beta's 2 locations)
    assert browser.find_element("id", "shown").text == f"{len(items)} of {len(items)} items, 30 of 30 images"
    # one aligned row per item, a column per method, every method cell the same width
    table_rows = shown(browser, "tr.item")
    assert sorted(r.get_attribute("data-item") for r in table_rows) == items
    for row in table_rows[:2]:
        cells = row.find_elements("css selector", "td.card")
        assert [c.get_attribute("data-method") for c in cells] == sorted(METHODS)
    widths = {round(c.rect["width"]) for c in browser.find_elements("css selector", "td.card")}
    assert len(widths) == 1, widths

    # each score once: clip_i_all only where it is not clip_i again (alpha: two photos); a link to the config
    for item in (next(i for i in items if "/alpha/" in i), next(i for i in items if "/beta/" in i)):
        card = browser.find_element("css selector", f'tr[data-item="{item}"] td.card[data-method="monkey"]')
        text, values = card.find_element("css selector", ".scores").text, records["monkey"][item]
        assert text.count(f"clip_i {values['clip_i']:.3f}") == 1
        assert ("clip_i_all" in text) == ("/alpha/" in item)
        config = Path(unquote(urlparse(card.find_element("css selector", "a.config").get_attribute("href")).path))
        assert config.is_file() and config.name == "monkey-test.json" and config.parent.parent.name == "monkey"

    # the location filter narrows with the subject; a location the subject lacks goes back to "all"
    subject, location = (
        Select(browser.find_element("id", "filter-subject")),
        Select(browser.find_element("id", "filter-location")),
    )
    locations = {
        s: sorted({r["location"] for r in rows["monkey"].values() if r["subject"] == s}) for s in ("alpha", "beta")
    }
    assert len(locations["alpha"]) == 3 and len(locations["beta"]) == 2
    subject.select_by_value("alpha")
    location.select_by_value(sorted(set(locations["alpha"]) - set(locations["beta"]))[0])  # beta lacks it
    assert len(shown(browser, "tr.item")) == 2  # one per dataset
    subject.select_by_value("beta")
    assert [o.get_attribute("value") for o in location.options][1:] == locations["beta"]
    assert location.first_selected_option.get_attribute("value") == ""
    assert {r.get_attribute("data-subject") for r in shown(browser, "tr.item")} == {"beta"}
    subject.select_by_value("")

    # one method's column: its 10 images, whose lazy thumbnails load once in view; the overlay behind its switch
    Select(browser.find_element("id", "filter-method")).select_by_value("monkey")
    visible = shown(browser, "td.card")
    assert {c.get_attribute("data-method") for c in visible} == {"monkey"} and len(visible) == len(items)
    assert browser.find_element("id", "shown").text.endswith(f"{len(items)} of 30 images")
    assert not shown(browser, "img.overlay")
    browser.find_element("id", "overlay").click()
    for card in visible[:3]:
        browser.execute_script("arguments[0].scrollIntoView()", card)
        for img in card.find_elements("css selector", "img.image, img.overlay"):
            assert img.is_displayed()
            wait_for(
                lambda img=img: browser.execute_script("return arguments[0].naturalWidth", img) > 0, what="a thumbnail"
            )
        full = Path(unquote(urlparse(card.find_element("css selector", "a.image").get_attribute("href")).path))
        assert full.is_file() and "/monkey/images/" in str(full)

    # sorting by any metric of any method: highest first, by the score records
    sort = Select(browser.find_element("id", "sort"))
    sort.select_by_visible_text("clip_t of masactrl")
    order = [r.get_attribute("data-item") for r in browser.find_elements("css selector", "tr.item")]
    assert order == sorted(items, key=lambda i: -records["masactrl"][i]["clip_t"])
    sort.select_by_value("")
    assert [r.get_attribute("data-item") for r in browser.find_elements("css selector", "tr.item")] == [
        r.get_attribute("data-item") for r in table_rows
    ]
