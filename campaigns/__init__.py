"""Rights catalog and campaigns: definitions in PostgreSQL, the maker-checker workflow, and the
publication of what the hot path needs to Redis."""

from pathlib import Path

from quanyi.db import load_queries

queries = load_queries(Path(__file__).with_name("queries.sql"))
