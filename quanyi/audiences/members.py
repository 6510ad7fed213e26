"""Reading audience members from a CSV or Parquet file, chunk by chunk, rejecting bad lines.

A CSV file holds one customer id a line, with an optional first line `customer_id`; a Parquet
file a column `customer_id`. A line that is not an id is rejected with its line number and the
rule it breaks; a line holding a card number (in any form) is rejected the same way and its
value goes nowhere: not to Redis, not to PostgreSQL, not into the reply.

CSV is read in blocks of about 1 MiB. A block whose every line is a plain id (the usual export)
is split in one go; any other block is read line by line, so each bad line gets its number.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from quanyi.core.errors import InvalidRequest
from quanyi.core.pan import has_pan, id_has_pan
from quanyi.core.schemas import IDENT_RULE, PAN_IN_ID, is_ident

CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
PARQUET_MAGIC = b"PAR1"
HEADER = "customer_id"
BLOCK_BYTES = 1 << 20
PARQUET_ROWS = 100_000
MAX_ERRORS = 100
NOT_UTF8 = "not UTF-8 text"
NOT_TEXT = "not a text value"
EMPTY = "empty"
BOM = "\ufeff".encode()

# Lines that are all ids of the IDENT form (quanyi/core/schemas.py), none of them long enough
# to hold a card number (13 digits and more): the block needs no line-by-line look.
_ID = rb"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
_PLAIN_BLOCK = re.compile(rb"(?:" + _ID + rb"\r?\n)*(?:" + _ID + rb")?")
_LONG_LINE = re.compile(rb"[^\n]{13,}")


@dataclass
class Rejections:
    """How many lines were rejected, and the first MAX_ERRORS of them."""

    count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"line": line, "reason": reason})


@dataclass(frozen=True)
class Chunk:
    ids: list[bytes]  # valid customer ids (UTF-8), in file order, duplicates possible
    read: int  # lines (rows) of the file this chunk covers, rejected ones included


@dataclass(frozen=True)
class MemberSource:
    """A file of members: `expected` is an upper bound of the members (its lines or rows), which
    sizes the buckets before the first line is read; `chunks` reads it once."""

    expected: int
    chunks: Callable[[Rejections], Iterator[Chunk]]


def why_not_member(text: str) -> str:
    """Why a non-empty value that is not an id is rejected; a card number is named as such."""
    return PAN_IN_ID if has_pan(text) or id_has_pan(text) else IDENT_RULE


def _blocks(stream: BinaryIO) -> Iterator[bytes]:
    """The stream in pieces of about BLOCK_BYTES, each ending at the end of a line."""
    rest = b""
    while block := stream.read(BLOCK_BYTES):
        block = rest + block
        cut = block.rfind(b"\n") + 1
        rest, block = block[cut:], block[:cut]
        if block:
            yield block
    if rest:
        yield rest


def _plain_ids(block: bytes, lines: list[bytes]) -> bool:
    if _PLAIN_BLOCK.fullmatch(block) is None:
        return False
    if _LONG_LINE.search(block) is None:
        return True
    return not any(len(line) >= 13 and id_has_pan(line.decode()) for line in lines)


def _checked_lines(lines: list[bytes], first: int, rejected: Rejections) -> list[bytes]:
    ids = []
    for number, raw in enumerate(lines, first):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            rejected.add(number, NOT_UTF8)
            continue
        if not text:
            continue  # a blank line holds nobody
        if is_ident(text):
            ids.append(text.encode())
        else:
            rejected.add(number, why_not_member(text))
    return ids


def csv_chunks(stream: BinaryIO, rejected: Rejections) -> Iterator[Chunk]:
    before = 0  # lines of the blocks already read
    for block in _blocks(stream):
        lines = block.splitlines()
        read, first = len(lines), before + 1
        if before == 0:
            block = block.removeprefix(BOM)  # spreadsheet exports start with a BOM
            lines[0] = lines[0].removeprefix(BOM)
            if lines[0].strip() == HEADER.encode():
                block, lines, first = block[block.find(b"\n") + 1 :], lines[1:], 2
        ids = lines if _plain_ids(block, lines) else _checked_lines(lines, first, rejected)
        yield Chunk(ids, read)
        before += read


def parquet_chunks(file: Any, rejected: Rejections) -> Iterator[Chunk]:
    import pyarrow.parquet as pq  # imported by the imports that read Parquet only

    try:
        parquet = pq.ParquetFile(file)
        if HEADER not in parquet.schema_arrow.names:
            raise InvalidRequest(f"a Parquet file of members has a column {HEADER}")
        number = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_ROWS, columns=[HEADER]):
            ids: list[bytes] = []
            values = batch.column(0).to_pylist()
            for value in values:
                number += 1
                if isinstance(value, str) and is_ident(value):
                    ids.append(value.encode())
                elif value is None or (isinstance(value, str) and not value.strip()):
                    rejected.add(number, EMPTY)
                elif isinstance(value, str):
                    rejected.add(number, why_not_member(value))
                else:  # a column of numbers may hold card numbers too
                    rejected.add(number, PAN_IN_ID if has_pan(str(value)) else NOT_TEXT)
            yield Chunk(ids, len(values))
    except InvalidRequest:
        raise
    except (OSError, ValueError):  # what pyarrow raises for a file that is not Parquet
        raise InvalidRequest("not a readable Parquet file") from None


def parquet_rows(file: Any) -> int:
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(file).metadata.num_rows)
    except (OSError, ValueError):
        raise InvalidRequest("not a readable Parquet file") from None


def body_source(body: bytes, media: str) -> MemberSource:
    """The members of a request body of media type `media` (CSV or Parquet)."""
    if media == PARQUET:
        rows = parquet_rows(io.BytesIO(body))
        return MemberSource(rows, lambda rejected: parquet_chunks(io.BytesIO(body), rejected))
    if media == CSV:
        lines = body.count(b"\n") + 1
        return MemberSource(lines, lambda rejected: csv_chunks(io.BytesIO(body), rejected))
    raise InvalidRequest(
        f"send the members as {CSV} or {PARQUET}", {"Content-Type": f"{CSV} or {PARQUET}"}
    )


def file_source(path: Path) -> MemberSource:
    """The members of a file, read as it goes: Parquet by its magic bytes, else CSV."""
    with path.open("rb") as f:
        magic = f.read(len(PARQUET_MAGIC))
    if magic == PARQUET_MAGIC:
        return MemberSource(
            parquet_rows(path), lambda rejected: parquet_chunks(str(path), rejected)
        )
    return MemberSource(_count_lines(path), lambda rejected: _file_chunks(path, rejected))


def _count_lines(path: Path) -> int:
    lines = 1
    with path.open("rb") as f:
        while block := f.read(BLOCK_BYTES):
            lines += block.count(b"\n")
    return lines


def _file_chunks(path: Path, rejected: Rejections) -> Iterator[Chunk]:
    with path.open("rb") as f:
        yield from csv_chunks(f, rejected)
