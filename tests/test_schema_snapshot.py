"""quanyi/stores/schema.sql is what every migration, applied in order to an empty database,
builds: read it to see the schema, and a migration that changes it shows in review."""

from __future__ import annotations

from tests.support.schema import REGENERATE, SCHEMA_FILE, migrated_schema


async def test_every_migration_applied_gives_the_committed_schema():
    built = await migrated_schema()
    committed = SCHEMA_FILE.read_text() if SCHEMA_FILE.exists() else ""
    assert built == committed, (
        f"{SCHEMA_FILE.name} differs from what the migrations build: if the migrations are"
        f" right, run `{REGENERATE}` and commit the file"
    )
