"""The audit log's hash chain (migration 0008, quanyi/access/audit.py): every insert chained in
commit order, whatever writes it and however many write at once; UPDATE, DELETE and TRUNCATE
refused; and `quanyi audit verify` naming the first row a superuser altered, inserted or
deleted behind the triggers' back."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from quanyi.access.audit import GENESIS, row_text, verify_chain
from quanyi.access.staff import Staff, audit
from quanyi.stores.db import migrate, migration_files
from tests.support.cli import quanyi

ADMIN = Staff("admin", "admin", "HQ")
SZ = Staff("sz-admin", "admin", "SZ")


async def verified(pool: asyncpg.Pool):
    async with pool.acquire() as conn:
        return await verify_chain(conn, batch=7)  # small batches: the cursor is paged through


async def fill(pool: asyncpg.Pool, n: int) -> None:
    for i in range(n):
        await audit(pool, ADMIN if i % 2 else SZ, "campaign.update", f"campaign:c{i}", {"i": i})


async def ids(pool: asyncpg.Pool) -> list[int]:
    return [r["id"] for r in await pool.fetch("SELECT id FROM audit_log ORDER BY id")]


async def as_superuser_bypassing_triggers(pool: asyncpg.Pool, *statements: str) -> None:
    """What only a superuser can do: write with every trigger off (replica mode)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for statement in statements:
            await conn.execute(statement)


def verify_cli() -> tuple[int, str]:
    done = quanyi("audit", "verify")
    return done.returncode, done.stdout + done.stderr


# --- chained as written -------------------------------------------------------------------


async def test_rows_written_by_any_path_chain_and_verify_in_python(pool):
    await audit(pool, ADMIN, "login", "admin")
    # Card numbers masked, text of every script, a nested detail, another session time zone,
    # a time with microseconds, a row written by plain SQL: Python's text matches PostgreSQL's.
    await audit(pool, ADMIN, "grant.revoke", "grant:g1", {"reason": "卡 4111 1111 1111 1111"})
    await audit(pool, SZ, "campaign.update", "campaign:c1", {"a": [1, {"b": None}], "é": 1.5})
    async with pool.acquire() as conn:
        await conn.execute("SET TimeZone = 'America/St_Johns'")
        await conn.execute(
            "INSERT INTO audit_log (at, actor, branch, action, target, detail)"
            " VALUES ('2026-01-02 03:04:05.000007+08', 'x:y', 'SZ', 'a\nb', '', '{}')"
        )
        await conn.execute("RESET TimeZone")
    report = await verified(pool)
    assert report.intact, report.broken
    assert report.rows == 4 and report.last_id == 4
    rows = await pool.fetch(
        "SELECT id, at, actor, branch, action, target, detail::text AS detail, prev_hash, hash"
        " FROM audit_log ORDER BY id"
    )
    assert rows[0]["prev_hash"] == GENESIS
    for before, row in itertools.pairwise(rows):
        assert row["prev_hash"] == before["hash"]
        assert row["hash"] == hashlib.sha256(before["hash"] + row_text(row).encode()).digest()
    assert report.head_hash == rows[-1]["hash"]


async def test_many_concurrent_audited_actions_keep_one_chain(pool):
    async def staff_member(n: int) -> None:
        for i in range(10):
            async with pool.acquire() as conn, conn.transaction():
                await audit(conn, ADMIN, "campaign.approve", f"campaign:c{n}", {"i": i})
                await asyncio.sleep(0)  # others queue on the chain head meanwhile

    await asyncio.gather(*(staff_member(n) for n in range(10)))
    report = await verified(pool)
    assert report.intact, report.broken
    assert report.rows == 100
    assert await ids(pool) == list(range(1, 101))  # in chain order, no gaps


async def test_concurrent_inserts_with_rollbacks_still_verify(pool, database):
    """Each connection inserts inside a transaction that sometimes rolls back after others
    have queued behind it: the next insert chains onto what committed, never onto the row
    that vanished."""
    connections = [await asyncpg.connect(database) for _ in range(8)]

    class Undo(Exception):
        pass

    async def writer(conn: asyncpg.Connection, w: int) -> int:
        kept = 0
        for i in range(12):
            try:
                async with conn.transaction():
                    await audit(conn, ADMIN, "budget.move", f"campaign:c{w}", {"i": i})
                    await asyncio.sleep(0.002)
                    if (w + i) % 3 == 0:
                        raise Undo
                kept += 1
            except Undo:
                pass
        return kept

    try:
        kept = await asyncio.gather(*(writer(c, w) for w, c in enumerate(connections)))
    finally:
        for conn in connections:
            await conn.close()
    assert 0 < sum(kept) < 8 * 12
    report = await verified(pool)
    assert report.intact, report.broken
    assert report.rows == sum(kept)
    assert await ids(pool) == list(range(1, sum(kept) + 1))


async def until_waiting_for_the_lock(pool: asyncpg.Pool) -> None:
    for _ in range(500):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 8008"
            " AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first transaction never waited for the lock")


async def test_rows_chain_in_commit_order_and_an_open_transaction_blocks_nobody(pool, database):
    """T1 audits, then waits for a lock T2 holds; T2 audits and commits. Were the chain head
    locked at the insert, T2 would wait for T1 and T1 for T2 (a deadlock); it is locked at the
    commit, so T2 commits first and its row comes first in the chain."""
    first, second = await asyncpg.connect(database), await asyncpg.connect(database)
    try:
        await second.execute("BEGIN")
        await second.execute("SELECT pg_advisory_xact_lock(8008)")

        async def t1() -> None:
            async with first.transaction():
                await audit(first, ADMIN, "campaign.approve", "campaign:t1")
                await first.execute("SELECT pg_advisory_xact_lock(8008)")

        waiting = asyncio.create_task(t1())
        await until_waiting_for_the_lock(pool)  # T1 has written its row
        await audit(second, SZ, "right.update", "right:t2")
        await asyncio.wait_for(second.execute("COMMIT"), 5)
        await asyncio.wait_for(waiting, 5)
    finally:
        await first.close()
        await second.close()
    rows = await pool.fetch("SELECT id, target FROM audit_log ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, "right:t2"), (2, "campaign:t1")]
    assert (await verified(pool)).intact


async def test_an_empty_log_is_intact_and_says_so(pool):
    assert (await verified(pool)).intact
    code, out = verify_cli()
    assert (code, out.strip()) == (0, "audit chain intact: 0 rows (head none)")


# --- refused ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET detail = '{}'",
        "DELETE FROM audit_log WHERE id = 1",
        "DELETE FROM audit_log WHERE false",
        "TRUNCATE audit_log",
        "UPDATE audit_chain_head SET last_id = 0",
        "DELETE FROM audit_chain_head",
    ],
)
async def test_update_delete_and_truncate_are_refused_even_to_the_owner(pool, statement):
    await fill(pool, 2)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute(statement)
    assert (await verified(pool)).rows == 2


@pytest.fixture
async def app_role(pool, database) -> AsyncIterator[asyncpg.Connection]:
    """A connection as a role like the application's: not the owner, allowed to read and
    append to the audit log and nothing more on it."""
    role = f"qyt_app_{os.getpid()}"
    await pool.execute(f'DROP ROLE IF EXISTS "{role}"')
    await pool.execute(f'CREATE ROLE "{role}" LOGIN')
    await pool.execute(f'GRANT SELECT, INSERT ON audit_log TO "{role}"')
    conn = await asyncpg.connect(database, user=role)
    try:
        yield conn
    finally:
        await conn.close()
        await pool.execute(f'DROP OWNED BY "{role}"')
        await pool.execute(f'DROP ROLE "{role}"')


async def test_the_application_role_appends_but_cannot_change_or_remove_rows(app_role, pool):
    await audit(app_role, ADMIN, "login", "admin")  # the chain trigger needs no right on the head
    for statement in [
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE audit_chain_head SET last_id = 0",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "SET session_replication_role = replica",
    ]:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_role.execute(statement)
    report = await verified(pool)
    assert report.intact and report.rows == 1


# --- tampering, found ---------------------------------------------------------------------


async def test_a_superuser_editing_a_rows_detail_is_named_as_altered(pool):
    await fill(pool, 5)
    await as_superuser_bypassing_triggers(
        pool, "UPDATE audit_log SET detail = '{\"i\": 99}' WHERE id = 3"
    )
    report = await verified(pool)
    assert (report.broken.row_id, report.broken.kind) == (3, "altered")
    assert report.rows == 2
    code, out = verify_cli()
    assert code == 3, out
    assert "audit chain broken at row 3 (altered)" in out
    # The same row edited by disabling the guard, as the table's owner could.
    await pool.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
    try:
        await pool.execute("UPDATE audit_log SET actor = 'nobody' WHERE id = 4")
    finally:
        await pool.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
    assert (await verified(pool)).broken.row_id == 3  # the first break is named


async def test_an_altered_row_whose_hash_was_recomputed_is_named(pool):
    await fill(pool, 5)
    await as_superuser_bypassing_triggers(
        pool,
        "UPDATE audit_log SET target = 'campaign:other',"
        " hash = sha256(prev_hash || convert_to(audit_row_text(id, at, actor, branch, action,"
        " 'campaign:other', detail), 'UTF8')) WHERE id = 2",
    )
    report = await verified(pool)
    assert (report.broken.row_id, report.broken.kind) == (2, "altered")


async def test_the_last_row_altered_with_its_hash_recomputed_is_caught_by_the_head(pool):
    await fill(pool, 3)
    await as_superuser_bypassing_triggers(
        pool,
        "UPDATE audit_log SET actor = 'x', hash = sha256(prev_hash || convert_to("
        "audit_row_text(id, at, 'x', branch, action, target, detail), 'UTF8')) WHERE id = 3",
    )
    report = await verified(pool)
    assert (report.broken.row_id, report.broken.kind) == (3, "altered")


async def test_a_forged_row_is_named_as_inserted(pool):
    await fill(pool, 4)
    await as_superuser_bypassing_triggers(
        pool,
        "INSERT INTO audit_log (id, actor, branch, action, target, prev_hash, hash)"
        " VALUES (5, 'admin', 'HQ', 'campaign.approve', 'campaign:c9', sha256('x'), sha256('y'))",
    )
    report = await verified(pool)
    assert (report.broken.row_id, report.broken.kind) == (5, "inserted")
    code, out = verify_cli()
    assert code == 3 and "audit chain broken at row 5 (inserted)" in out, out


async def test_a_forged_row_chained_correctly_past_the_head_is_named_as_inserted(pool):
    await fill(pool, 4)
    await as_superuser_bypassing_triggers(
        pool,
        "INSERT INTO audit_log (id, at, actor, branch, action, target, prev_hash, hash)"
        " SELECT 5, now(), 'admin', 'HQ', 'campaign.approve', 'campaign:c9', hash,"
        " sha256(hash || convert_to(audit_row_text(5, now(), 'admin', 'HQ', 'campaign.approve',"
        " 'campaign:c9', '{}'), 'UTF8')) FROM audit_log WHERE id = 4",
    )
    report = await verified(pool)
    assert (report.broken.row_id, report.broken.kind) == (5, "inserted")


async def test_a_deleted_middle_row_is_named_by_the_row_after_it(pool):
    await fill(pool, 6)
    await as_superuser_bypassing_triggers(pool, "DELETE FROM audit_log WHERE id = 3")
    report = await verified(pool)
    assert (report.broken.row_id, report.broken.kind) == (4, "deleted")
    assert "the row before row 4 was deleted" in report.broken.message
    code, out = verify_cli()
    assert code == 3 and "audit chain broken at row 4 (deleted)" in out, out


async def test_deleting_the_first_row_is_found(pool):
    await fill(pool, 3)
    await as_superuser_bypassing_triggers(pool, "DELETE FROM audit_log WHERE id = 1")
    report = await verified(pool)
    assert (report.broken.row_id, report.broken.kind) == (2, "deleted")


async def test_deleting_the_last_rows_is_found_through_the_head(pool):
    await fill(pool, 5)
    await as_superuser_bypassing_triggers(pool, "DELETE FROM audit_log WHERE id >= 4")
    report = await verified(pool)
    assert (report.broken.row_id, report.broken.kind) == (4, "deleted")
    assert "rows 4 to 5 were deleted" in report.broken.message
    code, out = verify_cli()
    assert code == 3 and "audit chain broken at row 4 (deleted)" in out, out


async def test_deleting_every_row_is_found_through_the_head(pool):
    await fill(pool, 2)
    await as_superuser_bypassing_triggers(pool, "DELETE FROM audit_log")
    report = await verified(pool)
    assert (report.broken.row_id, report.broken.kind) == (1, "deleted")


async def test_a_removed_head_is_found_and_the_chain_goes_on_after_it(pool):
    await fill(pool, 3)
    await as_superuser_bypassing_triggers(pool, "DELETE FROM audit_chain_head")
    report = await verified(pool)
    assert report.broken.kind == "deleted" and "head is missing" in report.broken.message
    # The next insert starts a new head after the last id: the restart itself is named.
    await audit(pool, ADMIN, "login", "admin")
    assert await ids(pool) == [1, 2, 3, 4]
    report = await verified(pool)
    assert (report.broken.row_id, report.broken.kind) == (4, "deleted")


# --- the migration on a log that already has rows -----------------------------------------


async def test_the_migration_chains_existing_rows_in_id_order(database):
    url = f"{database}_at_0007"
    admin = await asyncpg.connect(database.rsplit("/", 1)[0] + "/postgres")
    name = url.rsplit("/", 1)[1]
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, path in migration_files():
            if version >= 8:
                break
            await conn.execute(path.read_text())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, path.name
            )
        # Ids with a gap (a rolled-back insert used one), written before the chain existed.
        await conn.execute(
            "INSERT INTO audit_log (id, at, actor, branch, action, target, detail) VALUES"
            " (1, $1, 'admin', 'HQ', 'login', 'admin', '{}'),"
            " (2, $1, 'admin', 'HQ', 'campaign.create', 'campaign:c1', '{\"n\": 1}'),"
            " (5, $1, 'sz', 'SZ', 'campaign.submit', 'campaign:c1', '{}')",
            datetime(2026, 11, 30, 8, 0, 0, 123456, tzinfo=UTC),
        )
        assert "0008_audit_chain.sql" in await migrate(url)
        report = await verify_chain(conn)
        assert report.intact and report.rows == 3 and report.last_id == 5
        await audit(conn, ADMIN, "logout", "admin")
        assert await conn.fetchval("SELECT max(id) FROM audit_log") == 6
        assert (await verify_chain(conn)).rows == 4
        # A forgery in the old gap, chained onto row 2: row 5 still follows row 2.
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "INSERT INTO audit_log (id, at, actor, branch, action, target, prev_hash, hash)"
                " SELECT 3, at, 'admin', 'HQ', 'x', 'y', hash, sha256(hash || convert_to("
                " audit_row_text(3, at, 'admin', 'HQ', 'x', 'y', '{}'), 'UTF8'))"
                " FROM audit_log WHERE id = 2"
            )
        broken = (await verify_chain(conn)).broken
        assert broken is not None and (broken.row_id, broken.kind) == (3, "inserted")
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
