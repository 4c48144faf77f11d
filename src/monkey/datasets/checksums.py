"""Checksum files in `sha256sum` format, so a copy of a dataset can be checked against a known one.

A file holds `<sha256>  <relative path>` lines (and `#` comment lines saying what it covers); GNU
`sha256sum -c FILE` reads it too. Files present on disk but not listed are ignored.
"""

from dataclasses import dataclass, field
from pathlib import Path

from monkey.atomic import atomic_write_bytes
from monkey.errors import DataError
from monkey.hashing import file_sha256
from monkey.text_files import read_text


@dataclass
class ChecksumReport:
    """What `verify_checksums` found: every listed file present with the listed hash, or not."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched

    def summary(self, limit: int = 5) -> str:
        if self.ok:
            return f"all {self.checked} files match"
        parts = []
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} differ (e.g. {self.mismatched[:limit]})")
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {self.missing[:limit]})")
        return f"{self.checked} files listed: " + "; ".join(parts)


def read_checksums(path: Path) -> dict[str, str]:
    """relative path -> sha256 from a sha256sum-format file."""
    sums: dict[str, str] = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise DataError(f"{path}:{number}: expected '<sha256>  <relative path>', got {line!r}")
        sums[name.removeprefix("*")] = digest.lower()
    if not sums:
        raise DataError(f"{path} lists no file")
    return sums


def compute_checksums(root: Path, names: list[str]) -> dict[str, str]:
    return {name: file_sha256(root / name) for name in names}


def write_checksums(path: Path, sums: dict[str, str], header: list[str]) -> None:
    lines = [f"# {line}" for line in header] + [f"{sums[name]}  {name}" for name in sorted(sums)]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def verify_checksums(root: Path, expected: dict[str, str]) -> ChecksumReport:
    report = ChecksumReport()
    for name, digest in sorted(expected.items()):
        report.checked += 1
        path = root / name
        if not path.is_file():
            report.missing.append(name)
        elif file_sha256(path) != digest:
            report.mismatched.append(name)
    return report
