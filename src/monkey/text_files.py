"""Reading the text files a user hands in (subjects.csv, prompt lists, import mappings, checksums).

Spreadsheet programs and Windows editors save "Unicode text" as UTF-16 with a byte-order mark, and
UTF-8 exports often start with a BOM too. Every such reader goes through `read_text`: a BOM decides
the encoding (UTF-8, UTF-16 or UTF-32, either byte order), no BOM means UTF-8, and bytes that do not
decode stop the run with one line naming the file and the byte offset, not a UnicodeDecodeError.
"""

import codecs
from pathlib import Path

from monkey.errors import DataError, MonkeyError

# longest first: UTF-32-LE's BOM starts with UTF-16-LE's
BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decode_text(data: bytes, where: str, error: type[MonkeyError] = DataError) -> str:
    """`data` as text, its encoding chosen by its BOM (none: UTF-8); the BOM itself is dropped."""
    encoding, skip = "utf-8", 0
    for bom, name in BOMS:
        if data.startswith(bom):
            encoding, skip = name, len(bom)
            break
    try:
        return data[skip:].decode(encoding)
    except UnicodeDecodeError as err:
        offset = skip + err.start
        raise error(
            f"{where}: byte {offset} (0x{data[offset]:02x}) is not {encoding.upper()} text; save the file as "
            "UTF-8 (UTF-16 with a byte-order mark is read too)"
        ) from None


def read_text(path: str | Path, error: type[MonkeyError] = DataError) -> str:
    """The text of a user's file (see the module docstring); `error` is raised for undecodable bytes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise error(f"{path} is a folder; a text file is needed here") from None
    except OSError as err:
        raise error(f"cannot read {path}: {err.strerror}") from None
    return decode_text(data, str(path), error)
