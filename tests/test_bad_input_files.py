"""Bad input FILES and sizes (issue 26, points 7, 8 and 9), as a table: each case is the input, the exit
code, and the words its one error line must contain. Every case runs in-process through the entry
point a user types (`monkey-bench` = monkey.cli.run_job, `monkey-import`, `monkey-study`) and must give
exit 2, exactly one line, no traceback, and write nothing under the test's folder. The config, key and
name errors are the other table (tests/test_bad_input_table.py). Files in UTF-16 or UTF-8 with a BOM
must read exactly as the plain UTF-8 file (monkey.text_files).

Planted bugs, each caught here (then reverted):
  - text_files.decode_text: BOMs tried shortest first (UTF-16-LE before UTF-32-LE): test_every_bom_decodes_*
  - text_files.decode_text: the offset without the BOM's length: case subjects-csv-latin1-after-bom
  - memory_check.estimate_bytes: the decoder term without its factor 2: test_the_size_bound_matches_*
  - runner: check_memory moved after build_method: case size-800000 (a model is loaded)
  - study.responses: isinstance(question, str) dropped: case response-question-list
  - import_cli: the empty-mapping refusal dropped (exit 0, nothing imported): case mapping-empty
  - study.responses.load_study: the assignments column check dropped: case assignments-other-table
  - text_files.decode_text: UnicodeDecodeError no longer caught: case prompts-file-latin1 (a traceback)
"""

import codecs
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import QUICK

from monkey import runner
from monkey.cli import run_job
from monkey.datasets.folder import read_subjects_csv
from monkey.errors import DataError
from monkey.import_cli import main as import_main
from monkey.imports import read_mapping
from monkey.memory_check import estimate_bytes
from monkey.prompts import read_prompt_file
from monkey.study.cli import main as study_main
from monkey.study.site import ASSIGNMENT_COLUMNS
from monkey.text_files import decode_text

SMALL = ("plan.limit.subjects=1", "plan.limit.prompts=1", "run.stages=[generate]", *QUICK)
ITEM = "dreambooth/backpack/00/p00/s0"  # the first item of the bundled DreamBooth plan
SUBJECTS = "name,class,subject_word\nrex,dog,rex dog\n"


# ---- input builders: each writes its files under `root` and returns the command to run ----------------
def bench(make_config, *overrides: str) -> Callable[[Path], int]:
    return lambda root: run_job(make_config(*SMALL, *overrides), root / "run")


def folder_dataset(root: Path, subjects: bytes) -> Path:
    from standins import noise

    data = root / "data"
    (data / "rex").mkdir(parents=True)
    noise(64, 64).save(data / "rex" / "00.png")
    (data / "subjects.csv").write_bytes(subjects)
    return data


def study_folder(root: Path, definition: str | None = None, assignments: bytes | None = None) -> Path:
    """A minimal study folder as monkey-study build writes it: one participant, one question, 2 options."""
    study = root / "study"
    study.mkdir()
    (study / "study.json").write_text(
        definition
        if definition is not None
        else '{"format": "monkey-study", "study_id": "s1", "datasets": ["dreambooth"],'
        ' "methods": [{"label": "a", "method": "a"}, {"label": "b", "method": "b"}]}'
    )
    if assignments is None:
        values = {"study_id": "s1", "participant": "p01", "screen": "1", "question": "q1", "kind": "question"}
        lines = [",".join(ASSIGNMENT_COLUMNS)]
        for position, option in enumerate("ab"):
            row = {**values, "dataset": "dreambooth", "item_id": ITEM, "position": str(position), "option": option}
            lines.append(",".join(row.get(column, "") for column in ASSIGNMENT_COLUMNS))
        assignments = ("\n".join(lines) + "\n").encode()
    (study / "assignments.csv").write_bytes(assignments)
    return study


def tally(root: Path, response: str, **study: object) -> int:
    folder = study_folder(root, **study)  # type: ignore[arg-type]
    (root / "r.json").write_text(response)
    return study_main(["tally", str(folder), str(root / "r.json"), "--out", str(root / "tally")])


RESPONSE = '{"format": "monkey-study-response", "study_id": "s1", "participant": %s, "answers": [%s]}'


def import_images(root: Path, mapping: bytes, *extra: str) -> int:
    images = root / "images"
    images.mkdir()
    from standins import noise

    noise(48, 48).save(images / "out.png")
    (root / "map.csv").write_bytes(mapping)
    return import_main(
        [
            "images",
            "--name",
            "ext",
            "--images",
            str(images),
            "--mapping",
            str(root / "map.csv"),
            *extra,
            "plan.limit.subjects=1",
            "plan.limit.prompts=1",
        ]
    )


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[..., int]  # (root, make_config) -> exit code
    words: tuple[str, ...]  # what the one line must contain ({root}: the test's folder)
    code: int = 2


def on_subjects(subjects: bytes) -> Callable[..., int]:
    """monkey-bench over a folder dataset whose subjects.csv holds `subjects`."""
    return lambda root, mc: bench(mc, "dataset=folder", f"dataset.root={folder_dataset(root, subjects)}")(root)


def on_prompts(data: bytes) -> Callable[..., int]:
    def run(root: Path, mc) -> int:
        (root / "p.txt").write_bytes(data)
        return bench(mc, "prompts=file", f"prompts.file={root / 'p.txt'}")(root)

    return run


def on_study(response: str = "{}", **study: object) -> Callable[..., int]:
    return lambda root, mc: tally(root, response, **study)


def on_import(mapping: bytes, *extra: str) -> Callable[..., int]:
    return lambda root, mc: import_images(root, mapping, *[arg.format(root=root) for arg in extra])


def jobs_into_a_folder(root: Path, mc) -> int:
    return import_main(["jobs", "--out", str(root), "plan.limit.prompts=1"])


def run_dir_below_a_file(root: Path, mc) -> int:
    (root / "f").write_text("x")
    return import_images(root, MAPPING, "--run-dir", str(root / "f" / "run"))


MAPPING = f"file,item_id\nout.png,{ITEM}\n".encode()
QUESTION_LIST = RESPONSE % ('"p01"', '{"question": ["q1"], "choice": 0}')
POSITION_TEXT = (",".join(ASSIGNMENT_COLUMNS) + "\ns1,p01,1,q1" + ",x" * 12 + "\n").encode()

CASES = [
    # point 7: a size no device holds is refused before any model loads
    Case(
        "size-800000",
        lambda root, mc: bench(mc, "generation.height=800000", "generation.width=800000")(root),
        ("generation.height=800000", "generation.width=800000", "needs at least", "free"),
    ),
    Case(
        "size-65536-batch-4",
        lambda root, mc: bench(mc, "generation.height=65536", "generation.width=65536", "generation.batch_size=4")(
            root
        ),
        ("generation.height=65536", "batches of 4", "TB"),
    ),
    # point 8: files that are not UTF-8 (nor UTF-16 with a BOM) name the file and the byte
    Case(
        "subjects-csv-latin1", on_subjects(b"name,class\nrex,caf\xe9\n"), ("{root}/data/subjects.csv", "byte 18 (0xe9)")
    ),
    Case(
        "subjects-csv-latin1-after-bom",
        on_subjects(codecs.BOM_UTF8 + b"name\n\xff\n"),
        ("subjects.csv", "byte 8 (0xff)"),
    ),
    Case("subjects-csv-utf16-odd-length", on_subjects(codecs.BOM_UTF16_LE + b"n\x00a"), ("subjects.csv", "UTF-16-LE")),
    Case("prompts-file-latin1", on_prompts(b"a photo \xe0 la plage\n"), ("{root}/p.txt", "byte 8 (0xe0)", "UTF-8")),
    Case("mapping-latin1", on_import(b"file,item_id\nout\xe9.png,x\n"), ("{root}/map.csv", "byte 16 (0xe9)")),
    # point 9: monkey-import
    Case("mapping-empty", on_import(b"file,item_id\n"), ("{root}/map.csv", "holds no rows", "nothing to import")),
    Case("mapping-empty-file", on_import(b""), ("map.csv", "holds no rows")),
    Case("run-dir-in-proc", on_import(MAPPING, "--run-dir", "/proc/nope"), ("--run-dir", "/proc/nope")),
    Case("run-dir-below-a-file", run_dir_below_a_file, ("--run-dir", "{root}/f", "is a file")),
    Case("jobs-out-existing-folder", jobs_into_a_folder, ("--out", "{root}", "is a folder")),
    # point 9: monkey-study tally
    Case("response-question-list", on_study(QUESTION_LIST), ("r.json", "answers[0]", "['q1']")),
    Case("response-participant-list", on_study(RESPONSE % ('["p01"]', "")), ("r.json", "participant ['p01']")),
    Case("response-truncated", on_study('{"a": 1'), ("{root}/r.json", "not a JSON")),
    Case(
        "study-json-truncated",
        on_study(definition='{"format": "monkey-study", "stu'),
        ("{root}/study/study.json", "not JSON"),
    ),
    Case("study-json-a-list", on_study(definition="[1, 2]"), ("study.json", "'list'")),
    Case(
        "study-json-no-methods",
        on_study(definition='{"format": "monkey-study", "study_id": "s1", "datasets": []}'),
        ("study.json", "'methods'"),
    ),
    Case(
        "assignments-binary",
        on_study(assignments=b"\x89PNG\r\n\x1a\n\x00\xff"),
        ("{root}/study/assignments.csv", "byte"),
    ),
    Case("assignments-other-table", on_study(assignments=b"a,b\n1,2\n"), ("assignments.csv", "missing", "participant")),
    Case("assignments-empty", on_study(assignments=b""), ("assignments.csv", "not the")),
    Case("assignments-ragged", on_study(assignments=b'x\n"1\n2,3,4\n'), ("assignments.csv",)),
    Case("assignments-position-text", on_study(assignments=POSITION_TEXT), ("assignments.csv", "position")),
]


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_file_is_one_line_exit_2_and_writes_nothing(case, make_config, tmp_path, caplog, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for input that must be refused first")

    monkeypatch.setattr(runner, "build_method", no_model)
    monkeypatch.chdir(tmp_path)  # a relative run.root (runs/) would land here
    caplog.set_level(logging.INFO)
    code = case.run(tmp_path, make_config)
    out = capsys.readouterr()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    lines = [line for line in (out.err.splitlines() + errors) if line.strip()]
    assert code == case.code, (code, lines)
    assert len(lines) == 1, lines
    assert "Traceback" not in out.err + out.out and all(r.exc_info is None for r in caplog.records)
    for words in case.words:
        assert words.format(root=tmp_path) in lines[0], (words, lines[0])
    # nothing written: no run folder (images, manifest, configs), no import folder, no tally
    assert not {"run", "runs", "tally"} & {path.name for path in tmp_path.iterdir()}
    assert not (tmp_path / "study" / "tally").exists()


# ---- what must be ACCEPTED: the same content in every encoding a spreadsheet or editor saves ------------
ENCODINGS = {
    "utf-8": b"",
    "utf-8-bom": codecs.BOM_UTF8,
    "utf-16-le-bom": codecs.BOM_UTF16_LE,
    "utf-16-be-bom": codecs.BOM_UTF16_BE,
    "utf-32-le-bom": codecs.BOM_UTF32_LE,
}
CODECS = {
    "utf-8": "utf-8",
    "utf-8-bom": "utf-8",
    "utf-16-le-bom": "utf-16-le",
    "utf-16-be-bom": "utf-16-be",
    "utf-32-le-bom": "utf-32-le",
}


def encoded(text: str, kind: str) -> bytes:
    return ENCODINGS[kind] + text.encode(CODECS[kind])


@pytest.mark.parametrize("kind", list(ENCODINGS))
def test_every_bom_decodes_to_the_same_text(kind):
    text = "name,class\r\nrex,café dog ☃\n"
    assert decode_text(encoded(text, kind), "x") == text


@pytest.mark.parametrize("kind", ["utf-8-bom", "utf-16-le-bom", "utf-16-be-bom"])
def test_subjects_prompts_and_mappings_read_alike_in_every_encoding(kind, tmp_path):
    subjects = tmp_path / kind / "subjects.csv"
    subjects.parent.mkdir()
    subjects.write_bytes(encoded("name,class,subject_word\r\nrex,dog,rex café\r\n", kind))
    plain = tmp_path / "subjects.csv"
    plain.write_bytes("name,class,subject_word\r\nrex,dog,rex café\r\n".encode())
    assert read_subjects_csv(subjects) == read_subjects_csv(plain)
    assert read_subjects_csv(subjects)["rex"].subject_word == "rex café"  # the BOM is not part of 'name'
    prompts = tmp_path / kind / "p.txt"
    prompts.write_bytes(encoded("# list\na {subject} à la plage\n\nin the snow\n", kind))
    assert read_prompt_file(prompts) == ("a {subject} à la plage", "in the snow")
    mapping = tmp_path / kind / "m.csv"
    mapping.write_bytes(encoded(f"file,item_id\r\nout é.png,{ITEM}\r\n", kind))
    rows = read_mapping(mapping)
    assert [row.fields for row in rows] == [{"file": "out é.png", "item_id": ITEM}]


def test_undecodable_byte_offset_counts_from_the_files_first_byte():
    data = codecs.BOM_UTF8 + "héllo ".encode() + b"\xc3("  # a cut two-byte sequence at offset 3 + 7
    with pytest.raises(DataError, match=r"f\.csv: byte 10 \(0xc3\)"):
        decode_text(data, "f.csv")


def test_the_size_bound_matches_a_count_by_hand(tiny_runtime):
    """estimate_bytes against the module docstring's terms, written out for 64x128, batch 3, tiny VAE
    (8 full-resolution channels, float32 everywhere on the CPU)."""
    height, width, batch = 64, 128, 3
    pixels = height * width
    by_hand = batch * (2 * 8 * pixels * 4 + 2 * 4 * (64 // 8) * (128 // 8) * 4 + 3 * pixels * 4 + 3 * pixels)
    assert estimate_bytes(height, width, batch, tiny_runtime) == by_hand == 3 * 8192 * 79 + 3 * 4096
