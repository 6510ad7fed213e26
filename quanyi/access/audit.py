"""The audit log as a hash chain: what each row's hash covers, and the walk that checks it.

Rows are chained by PostgreSQL as their transaction commits (migration 0008's triggers,
whatever code path inserted them): hash = sha256(prev_hash || row_text(row)), the first row's
prev_hash being GENESIS, and the one-row table audit_chain_head keeps the last id and hash. The walk here
recomputes every hash in Python, so a check does not trust the database's own functions, and
names the first row that breaks the chain:

- altered: its fields do not give its hash (the next row still names its old hash), or its
  hash was rewritten too (the next row, right after it, no longer follows it);
- inserted: the chain runs on as if the row were not there (the next row, or the head, follows
  the row before it), or it lies past the head;
- deleted: a row follows a row that is not the one it names (an id gap before it), or the
  head names rows after the last one there is.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg

from quanyi.access import queries

GENESIS = bytes(32)
TEXT_VERSION = "audit-v1"
# Rows read per round trip while walking the chain.
WALK_BATCH = 2000

Kind = Literal["altered", "inserted", "deleted"]


def row_text(row: Mapping[str, Any]) -> str:
    """What migration 0008's audit_row_text() makes of a row: every field length-prefixed, the
    time in UTC to the microsecond. `detail` is the jsonb as PostgreSQL prints it (detail::text),
    the one rendering both sides agree on."""
    at = row["at"].astimezone(UTC)
    moment = (
        f"{at.year:04d}-{at.month:02d}-{at.day:02d}T"
        f"{at.hour:02d}:{at.minute:02d}:{at.second:02d}.{at.microsecond:06d}Z"
    )
    fields = [row[name] for name in ("actor", "branch", "action", "target", "detail")]
    return "\n".join(
        [TEXT_VERSION, str(row["id"]), moment, *(f"{len(text)}:{text}" for text in fields)]
    )


def row_hash(prev_hash: bytes, row: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(prev_hash + row_text(row).encode()).digest()


@dataclass(frozen=True)
class ChainBreak:
    row_id: int
    kind: Kind
    message: str


@dataclass(frozen=True)
class ChainReport:
    rows: int  # rows found to chain correctly before the break (all of them when intact)
    last_id: int | None
    head_hash: bytes | None
    broken: ChainBreak | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None


@dataclass(frozen=True)
class Head:
    last_id: int
    hash: bytes


class _Walk:
    """The chain checked one row at a time. A row that does not follow is held until the row
    after it (or the head) tells whether it was altered, inserted or follows a deletion."""

    def __init__(self, head: Head | None) -> None:
        self.head = head
        self.expected = GENESIS  # the hash the next row must name as its prev_hash
        self.skipped = GENESIS  # the hash the last row named: a row naming it skips that row
        self.last_id: int | None = None
        self.rows = 0
        self.held: tuple[Mapping[str, Any], bool] | None = None
        self.hash_at_head: bytes | None = None  # the hash of the row the head names

    def feed(self, row: Mapping[str, Any]) -> ChainBreak | None:
        if self.held is not None:
            return self._judge(row["prev_hash"])
        # No hash at all: written past the triggers (a pending row is never committed).
        self_consistent = (
            row["prev_hash"] is not None
            and row["hash"] is not None
            and row_hash(row["prev_hash"], row) == row["hash"]
        )
        if self_consistent and row["prev_hash"] == self.expected:
            self.skipped, self.expected, self.last_id = self.expected, row["hash"], row["id"]
            self.rows += 1
            if self.head is not None and row["id"] == self.head.last_id:
                self.hash_at_head = row["hash"]
            return None
        self.held = (row, self_consistent)
        return None

    def finish(self) -> ChainBreak | None:
        head = self.head
        if self.held is not None:
            return self._judge(head.hash if head else None)
        if head is None:
            if self.rows == 0:
                return None
            return ChainBreak(
                self.last_id or 0, "deleted", "the chain head is missing: it was deleted"
            )
        if head.last_id == (self.last_id or 0) and head.hash == self.expected:
            return None
        if self.last_id is None or head.last_id > self.last_id:
            first = (self.last_id or 0) + 1
            return ChainBreak(
                first,
                "deleted",
                f"rows {first} to {head.last_id} were deleted: the chain head names row"
                f" {head.last_id}, the last row is {self.last_id or 'none'}",
            )
        if head.last_id < self.last_id and head.hash == self.hash_at_head:
            first = head.last_id + 1
            return ChainBreak(
                first,
                "inserted",
                f"row {first} was inserted: it lies past the chain head (row {head.last_id})",
            )
        return ChainBreak(
            head.last_id,
            "altered",
            f"row {head.last_id} was altered and its hash rewritten (or the chain head was):"
            " the head names another hash for it",
        )

    def _judge(self, next_prev: bytes | None) -> ChainBreak:
        """The held row, judged by the prev_hash of the row after it (or the head's hash)."""
        assert self.held is not None
        row, self_consistent = self.held
        row_id, before = row["id"], self.last_id
        if next_prev == self.expected:
            return ChainBreak(
                row_id, "inserted", f"row {row_id} was inserted: the chain runs on without it"
            )
        if not self_consistent:
            return ChainBreak(
                row_id, "altered", f"row {row_id} was altered: its fields do not give its hash"
            )
        if before is not None and row["prev_hash"] == self.skipped:
            return ChainBreak(
                before,
                "inserted",
                f"row {before} was inserted: row {row_id} follows the row before it",
            )
        if before is not None and row["prev_hash"] == GENESIS:
            return ChainBreak(
                row_id,
                "deleted",
                f"the chain restarts at row {row_id}: its head was deleted after row {before}",
            )
        if before is not None and row_id == before + 1:
            return ChainBreak(
                before,
                "altered",
                f"row {before} was altered and its hash rewritten: row {row_id} names another",
            )
        follows = f"the row it follows, {before}" if before is not None else "the chain's start"
        return ChainBreak(
            row_id,
            "deleted",
            f"the row before row {row_id} was deleted: row {row_id} does not name {follows}",
        )


async def verify_chain(
    conn: asyncpg.Connection,
    progress: Callable[[int, int], None] | None = None,
    batch: int = WALK_BATCH,
) -> ChainReport:
    """Walks the whole chain in id order on one snapshot (the head and every row as of one
    moment; rows written meanwhile wait for the next check), `batch` rows at a time through a
    cursor. `progress(done, total)` is told after each batch; total is an estimate (ids)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        found = await conn.fetchrow(queries.audit_chain_head)
        head = Head(found["last_id"], found["hash"]) if found else None
        first_id = await conn.fetchval(queries.audit_first_id)
        total = max(0, (head.last_id if head else 0) - (first_id or 1) + 1)
        walk = _Walk(head)
        done = 0
        async for row in _rows(conn, batch):
            broken = walk.feed(row)
            if broken is not None:
                return ChainReport(walk.rows, walk.last_id, head.hash if head else None, broken)
            done += 1
            if progress is not None and done % batch == 0:
                progress(done, total)
        broken = walk.finish()
        if progress is not None:
            progress(done, max(total, done))
        return ChainReport(walk.rows, walk.last_id, head.hash if head else None, broken)


async def _rows(conn: asyncpg.Connection, batch: int) -> AsyncIterator[asyncpg.Record]:
    async for row in conn.cursor(queries.audit_chain_rows, prefetch=batch):
        yield row


# --- reading the log ----------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """Which rows a read returns. `actor` is a username; `object` a target (`campaign:c1`) or
    the kind before its colon (`campaign`); `action` an action (`login.failed`) or the start
    of one before a dot (`login`, `campaign`); `since` inclusive, `until` exclusive;
    `branches` the reader's scope (None: every branch)."""

    branches: list[str] | None = None
    actor: str | None = None
    object: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def arguments(self) -> tuple[Any, ...]:
        """The parameters $1-$8 of the audit_page and audit_export queries."""
        return (
            self.branches,
            self.actor,
            self.object,
            None if self.object is None else _like_prefix(self.object) + ":%",
            self.action,
            None if self.action is None else _like_prefix(self.action) + ".%",
            self.since,
            self.until,
        )


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def audit_page(
    pool: asyncpg.Pool, wanted: AuditFilter, limit: int, before: int | None
) -> list[asyncpg.Record]:
    """Newest first: at most `limit` rows with an id below `before` (None: from the newest)."""
    return await pool.fetch(queries.audit_page, *wanted.arguments(), before, limit)


async def audit_export(
    pool: asyncpg.Pool, wanted: AuditFilter, batch: int = 1000
) -> AsyncIterator[list[asyncpg.Record]]:
    """Every matching row, oldest first, `batch` at a time: each batch is its own query (keyset
    on id), so a slow reader of an export holds no connection between batches."""
    after = 0
    while True:
        rows = await pool.fetch(queries.audit_export, *wanted.arguments(), after, batch)
        if rows:
            yield rows
        if len(rows) < batch:
            return
        after = rows[-1]["id"]
