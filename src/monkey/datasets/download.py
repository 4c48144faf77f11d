"""Fetch the public google/dreambooth archive and check a copy against the checksums we ship.

The project ships sha256 lists (data/checksums/) for two copies of DreamBooth:
    dreambooth-original.sha256     google/dreambooth at commit 4f887af (full-size, 42 MPO files)
    dreambooth-resized-512.sha256  the 512 px copy the project's bundled subset was cut from
Both cover LICENSE.md and every file under dataset/ (158 images and the two text files).
"""

import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from monkey.datasets.checksums import ChecksumReport, read_checksums, verify_checksums
from monkey.errors import DataError
from monkey.paths import data_dir

DREAMBOOTH_COMMIT = "4f887af7970a06fc0cd3adaa1d0b368547d6a1d0"
DREAMBOOTH_URL = f"https://github.com/google/dreambooth/archive/{DREAMBOOTH_COMMIT}.zip"
VARIANTS = {"original": "dreambooth-original.sha256", "resized-512": "dreambooth-resized-512.sha256"}
KEEP_TOP_LEVEL = ("dataset", "LICENSE.md", "README.md")  # what is taken from the archive


def checksum_file(variant: str) -> Path:
    return data_dir() / "checksums" / VARIANTS[variant]


def covered_files(root: Path) -> list[str]:
    """The files a DreamBooth checksum list covers: LICENSE.md and everything under dataset/."""
    names = ["LICENSE.md"] if (root / "LICENSE.md").is_file() else []
    names += sorted(
        str(path.relative_to(root))
        for path in (root / "dataset").rglob("*")
        if path.is_file() and not path.name.startswith(".")
    )
    return names


@dataclass
class Identification:
    variant: str | None  # the shipped list that matches completely, or None
    reports: dict[str, ChecksumReport]

    def describe(self, root: Path) -> str:
        if self.variant:
            return f"{root}: the {self.variant} DreamBooth copy ({self.reports[self.variant].summary()})"
        lines = [f"{root} matches no known DreamBooth copy:"]
        lines += [f"  {variant}: {report.summary()}" for variant, report in self.reports.items()]
        return "\n".join(lines)


def identify_dreambooth(root: Path) -> Identification:
    """Check `root` against every shipped list and say which copy it is, if any."""
    if not (root / "dataset").is_dir() and (root / "prompts_and_classes.txt").is_file():
        raise DataError(f"{root} is a dataset/ folder: pass the folder above it (holding LICENSE.md and dataset/)")
    reports = {variant: verify_checksums(root, read_checksums(checksum_file(variant))) for variant in VARIANTS}
    matching = [variant for variant, report in reports.items() if report.ok]
    return Identification(matching[0] if matching else None, reports)


def no_network_message(url: str, dest: Path, err: Exception) -> str:
    return (
        f"cannot download {url} ({err}). Without a network, bring a copy from elsewhere: on a machine "
        "with one run `git clone https://github.com/google/dreambooth` (or this command), copy the folder "
        f"here, check it with `monkey-data verify dreambooth DIR`, and run with dataset.root=DIR "
        f"dataset.images=all. A resized copy in the same layout works too. (Tried to write to {dest}.)"
    )


def fetch(url: str, target: Path, timeout: float) -> None:
    """Stream `url` to `target` with a progress bar."""
    with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc="google/dreambooth") as progress:
            while block := response.read(1 << 20):
                out.write(block)
                progress.update(len(block))


def extract(archive: Path, dest: Path) -> None:
    """Unpack the archive's single top folder into `dest`, keeping only KEEP_TOP_LEVEL entries."""
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.infolist():
            parts = PurePosixPath(member.filename).parts
            if len(parts) < 2 or parts[1] not in KEEP_TOP_LEVEL or member.is_dir():
                continue
            relative = PurePosixPath(*parts[1:])
            if ".." in relative.parts or relative.is_absolute():
                raise DataError(f"{archive}: unsafe member path {member.filename!r}")
            target = dest.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(member) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out)


def download_dreambooth(
    dest: Path, url: str = DREAMBOOTH_URL, checksums: Path | None = None, timeout: float = 60.0
) -> ChecksumReport:
    """Download the archive into `dest` (LICENSE.md, README.md, dataset/) and verify it.

    A `dest` that already verifies is left alone. A download that does not verify raises, naming
    the files, and leaves them in place for inspection.
    """
    expected = read_checksums(checksums or checksum_file("original"))
    dest.mkdir(parents=True, exist_ok=True)
    existing = verify_checksums(dest, expected)
    if existing.ok:
        return existing
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        archive = Path(tmp) / "dreambooth.zip"
        try:
            fetch(url, archive, timeout)
        except (urllib.error.URLError, OSError) as err:
            raise DataError(no_network_message(url, dest, err)) from err
        try:
            extract(archive, dest)
        except zipfile.BadZipFile as err:
            raise DataError(f"{url} did not give a zip archive ({err}); try again or copy the data by hand") from err
    report = verify_checksums(dest, expected)
    if not report.ok:
        raise DataError(f"the download in {dest} does not match the shipped checksums: {report.summary()}")
    return report
