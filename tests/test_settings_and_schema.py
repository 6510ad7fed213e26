"""Settings precedence and the migrations."""

from __future__ import annotations

import asyncpg
import pytest

from quanyi.core.settings import Settings
from quanyi.stores.db import migrate, migration_files


def test_environment_overrides_the_config_file_which_overrides_defaults(tmp_path):
    config = tmp_path / "quanyi.toml"
    config.write_text('[quanyi]\nhttp_port = 9000\ntz = "Europe/London"\nkey_prefix = "file"\n')
    settings = Settings.from_env(
        {"QUANYI_CONFIG": str(config), "QUANYI_HTTP_PORT": "9100", "QUANYI_LOG_LEVEL": "DEBUG"}
    )
    assert settings.http_port == 9100  # environment wins
    assert settings.tz == "Europe/London"  # from the file
    assert settings.key_prefix == "file"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"  # default


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QUANYI_HTTP_PORT": "eighty"}, "http_port"),
        ({"QUANYI_TZ": "Mars/Olympus"}, "Mars/Olympus"),
        ({"QUANYI_LOG_LEVEL": "LOUD"}, "log_level"),
    ],
)
def test_bad_settings_fail_at_start_up(env, message):
    with pytest.raises(Exception, match=message):
        Settings.from_env(env)


def test_the_log_level_is_read_from_the_config_file_too(tmp_path):
    config = tmp_path / "quanyi.toml"
    config.write_text('[quanyi]\nlog_level = "WARNING"\n')
    assert Settings.from_env({"QUANYI_CONFIG": str(config)}).log_level == "WARNING"
    both = {"QUANYI_CONFIG": str(config), "QUANYI_LOG_LEVEL": "DEBUG"}
    assert Settings.from_env(both).log_level == "DEBUG"  # the environment still wins


def test_unknown_setting_in_config_file_is_refused(tmp_path):
    config = tmp_path / "quanyi.toml"
    config.write_text("[quanyi]\nhttp_prot = 9000\n")
    with pytest.raises(ValueError, match="http_prot"):
        Settings.from_env({"QUANYI_CONFIG": str(config)})


async def test_migrations_are_ordered_and_idempotent(database):
    versions = [v for v, _ in migration_files()]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert await migrate(database) == []  # already applied by the fixture: nothing to do
    conn = await asyncpg.connect(database)
    try:
        applied = [
            r["version"]
            for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        ]
    finally:
        await conn.close()
    assert applied == versions
