"""Reading a table: a CSV or Parquet file, compressed or not, or standard input (``-``).

Compression (gzip, bz2, xz, zip, zstd) is recognised from the first bytes, so a file's
name does not matter; encoding and delimiter are sniffed from the decompressed start;
comment lines (``#``) and title lines above the header are skipped with a notice. What
cannot be read (a spreadsheet, a web page, JSON, a binary file) fails with a one-line
:class:`DataError` that says what the file looks like and how to fix it.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import logging
import lzma
import re
import sys
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pandas as pd

from automl.exceptions import DataError

log = logging.getLogger("automl")

STDIN = "-"
NA_VALUES = ["", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "?", "#N/A"]
HEAD_BYTES = 1 << 16  # the start of the (decompressed) file used for sniffing
_MAGIC = [(b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"), (b"PK\x03\x04", "zip"),
          (b"\x28\xb5\x2f\xfd", "zstd")]
_SPREADSHEET = "a spreadsheet (Excel or OpenDocument); save the sheet as CSV and give that file"
_PARQUET_SUFFIXES = {".parquet", ".pq"}


@dataclass
class _Source:
    """Where the bytes come from: a path, or standard input read once into memory."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    def open_raw(self) -> IO[bytes]:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None  # one of the two is set by _source
        return self.path.open("rb")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (compression, encoding and delimiter sniffed) or Parquet file into a frame.

    ``path`` ``"-"`` reads standard input.

    Raises:
        DataError: the file is missing, a directory, empty, header-only or not a table.

    Example:
        >>> df = read_table("examples/penguins.csv")  # doctest: +SKIP
    """
    source = _source(path)
    raw_head = source.open_raw().read(8) if source.data is None else source.data[:8]
    if raw_head.startswith(b"PAR1") or Path(source.name).suffix.lower() in _PARQUET_SUFFIXES:
        df = _read_parquet(source)
    else:
        df = _read_csv(source, _compression(raw_head))
    if df.shape[1] == 0:
        raise DataError(f"'{source.name}' has no columns; give a CSV file with a header row.")
    if len(df) == 0:
        raise DataError(f"'{source.name}' has a header but no data rows; add rows below the header.")
    df.columns = unique_names(list(df.columns))
    return df


def _source(path: str | Path) -> _Source:
    if str(path) == STDIN:
        if sys.stdin is None or sys.stdin.isatty():
            raise DataError("'-' reads the table from standard input, but nothing is piped into it; "
                            "e.g. `automl ... - < data.csv`, or give the file's path.")
        data = sys.stdin.buffer.read()
        if not data:
            raise DataError("standard input ('-') is empty; pipe a CSV file into the command, "
                            "e.g. `cat data.csv | automl ... -`.")
        return _Source("standard input", data=data)
    p = Path(path)
    if not p.exists():
        raise DataError(f"file not found: '{p}'; check the path (relative paths start at {Path.cwd()}).")
    if p.is_dir():
        raise DataError(f"'{p}' is a directory, not a file; give the path of a CSV or Parquet file.")
    if p.stat().st_size == 0:
        raise DataError(f"'{p}' is empty (0 bytes); give a CSV file with a header row and data rows.")
    return _Source(str(p), path=p)


def unique_names(columns: list[object]) -> list[str]:
    """Column names as trimmed strings, made unique: a second ``a`` becomes ``a.1``, with a warning."""
    names = [str(c).strip() for c in columns]
    seen: set[str] = set()
    out: list[str] = []
    renamed: list[str] = []
    for name in names:
        new, k = name, 0
        while new in seen:
            k += 1
            new = f"{name}.{k}"
        if new != name:
            renamed.append(name)
        seen.add(new)
        out.append(new)
    if renamed:
        dupes = sorted(set(renamed))
        spaces = " (after trimming spaces)" if len(set(map(str, columns))) == len(columns) else ""
        log.warning("duplicate column names %s%s: later copies were renamed (e.g. '%s.1')",
                    dupes, spaces, dupes[0])
    return out


def _compression(head: bytes) -> str | None:
    return next((method for magic, method in _MAGIC if head.startswith(magic)), None)


def _decompressed(source: _Source, method: str | None) -> IO[bytes]:
    """The file's bytes, decompressed."""
    raw = source.open_raw()
    if method is None:
        return raw
    if method == "gzip":
        return gzip.GzipFile(fileobj=raw)
    if method == "bz2":
        return bz2.BZ2File(raw)
    if method == "xz":
        return lzma.LZMAFile(raw)
    if method == "zstd":
        try:
            import zstandard
        except ImportError:
            raise DataError(f"'{source.name}' is zstd-compressed and the `zstandard` package is not "
                            "installed; decompress it first (`zstd -d FILE`) or `pip install zstandard`."
                            ) from None
        return zstandard.ZstdDecompressor().stream_reader(raw)
    archive = zipfile.ZipFile(raw)
    names = [n for n in archive.namelist() if not n.endswith("/") and not n.startswith("__MACOSX")]
    if {"xl/workbook.xml", "mimetype"} & set(names):
        raise DataError(f"'{source.name}' is {_SPREADSHEET}.")
    if len(names) != 1:
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise DataError(f"'{source.name}' is a zip archive of {len(names)} files ({shown}); "
                        "give a zip holding exactly one CSV file, or unzip it and give the CSV.")
    return archive.open(names[0])


def _read_head(source: _Source, method: str | None) -> bytes:
    try:
        with _decompressed(source, method) as fh:
            return fh.read(HEAD_BYTES)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot decompress '{source.name}' ({method}: {exc}); check that the file "
                        "is complete, or decompress it yourself and give the CSV.") from None


def _read_parquet(source: _Source) -> pd.DataFrame:
    try:
        return pd.read_parquet(source.path if source.path is not None else io.BytesIO(source.data or b""))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise DataError(f"cannot read Parquet file '{source.name}': {exc}") from None


def sniff_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start > len(head) - 4:  # a multi-byte character cut by the sample's end
            return "utf-8"
        return "cp1252" if _decodes(head, "cp1252") else "latin-1"


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
        return True
    except UnicodeDecodeError:
        return False


def sniff_delimiter(lines: list[str]) -> str:
    """The delimiter of ``lines`` (non-blank): ``,``, ``;``, tab or ``|``."""
    lines = lines[:50]
    if not lines:
        return ","
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        counts = {d: sum(ln.count(d) for ln in lines) for d in ",;\t|"}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def _not_a_table(source: _Source, head: bytes, text: str) -> None:
    """Refuse what is plainly not a CSV, saying what it looks like."""
    name = source.name
    if head.startswith(b"\xd0\xcf\x11\xe0") or name.lower().endswith((".xlsx", ".xls", ".xlsm", ".ods")):
        raise DataError(f"'{name}' is {_SPREADSHEET}.")
    if b"\x00" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(f"'{name}' is not a text file; give a CSV or Parquet file.")
    start = text.lstrip()[:200].lower()
    if start.startswith(("<!doctype", "<html", "<?xml", "<")):
        raise DataError(f"'{name}' looks like HTML or XML, not CSV (a web page saved instead of the "
                        "file?); download the raw CSV file and give that.")
    if start.startswith(("{", "[{", "[[", "[\n", "[\r")):
        raise DataError(f"'{name}' looks like JSON, not CSV; convert it first, e.g. with pandas: "
                        "`pd.read_json('in.json').to_csv('out.csv', index=False)`.")


def _comment_lines(lines: list[str]) -> int:
    """How many lines at the top are blank or ``#`` comments."""
    n = 0
    while n < len(lines) and (not lines[n].strip() or lines[n].lstrip().startswith("#")):
        n += 1
    return n


def _title_lines(lines: list[str], sep: str) -> int:
    """How many lines at the top hold a single field above a table of several (a title)."""
    counts = [len(r) for r in csv.reader(lines[:60], delimiter=sep)]
    if not counts or Counter(c for c in counts if c).most_common(1)[0][0] < 2:
        return 0
    return next((i for i, c in enumerate(counts) if c >= 2), 0)


def _read_csv(source: _Source, method: str | None) -> pd.DataFrame:
    head = _read_head(source, method)
    encoding = sniff_encoding(head)
    text = head.decode(encoding, errors="replace")
    _not_a_table(source, head, text)
    lines = text.splitlines()
    if len(head) == HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    n_comments = _comment_lines(lines)
    excel_sep = re.fullmatch(r'"?sep=(.)"?', lines[n_comments].strip()) if n_comments < len(lines) else None
    if excel_sep:  # Excel's "sep=;" line names the delimiter
        n_comments += 1
    sep = excel_sep.group(1) if excel_sep else sniff_delimiter(
        [ln for ln in lines[n_comments:] if ln.strip()])
    try:
        n_titles = _title_lines(lines[n_comments:], sep)
        index_col = _trailing_delimiter(source, lines[n_comments + n_titles:], sep)
    except csv.Error as exc:
        raise DataError(f"cannot parse '{source.name}' as CSV (delimiter {sep!r}, {encoding}): "
                        f"{exc}") from None
    comments = sum(1 for ln in lines[:n_comments] if ln.strip()) - int(excel_sep is not None)
    if comments:
        log.info("skipped %d comment line(s) ('#') above the header of '%s'", comments, source.name)
    if n_titles:
        title = next(ln.strip() for ln in lines[n_comments:n_comments + n_titles] if ln.strip())
        log.warning("skipped %d line(s) above the header of '%s' that are not part of the table "
                    "(e.g. %r)", n_titles, source.name, title[:60])
    skip = n_comments + n_titles
    if skip >= len(lines):
        raise DataError(f"'{source.name}' holds only comment lines, no header; give a CSV file "
                        "with a header row and data rows.")

    def read(enc: str) -> pd.DataFrame:
        with _decompressed(source, method) as fh:
            return pd.read_csv(fh, sep=sep, encoding=enc, na_values=NA_VALUES, keep_default_na=False,
                               low_memory=False, skipinitialspace=True, skiprows=skip,
                               index_col=index_col)

    try:
        try:
            df = read(encoding)
        except UnicodeDecodeError:
            df = read("latin-1")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, csv.Error) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fix = (f"; every row needs as many fields as the header: quote values that contain {sep!r} "
               "or fix the row" if "Expected" in msg else "")
        raise DataError(f"cannot parse '{source.name}' as CSV (delimiter {sep!r}, {encoding}): "
                        f"{msg}{fix}") from None
    header = next(csv.reader(lines[skip:skip + 1], delimiter=sep), [])
    if len(header) == df.shape[1]:  # the names as written: pandas renames a repeated one itself
        df.columns = [h if h.strip() else c for h, c in zip(header, df.columns)]
    return df


def _trailing_delimiter(source: _Source, lines: list[str], sep: str) -> bool | None:
    """``False`` (no index column) when rows end in a delimiter the header lacks; else ``None``."""
    rows = list(csv.reader([ln for ln in lines[:60] if ln.strip()], delimiter=sep))
    if len(rows) < 2:
        return None
    header, data = rows[0], rows[1:]
    if all(len(r) == len(header) + 1 for r in data):
        if all(not r[-1].strip() for r in data):
            return False
        raise DataError(f"the header of '{source.name}' has {len(header)} names but its rows have "
                        f"{len(header) + 1} fields; add the missing column name to the header.")
    return None
