"""The grant ledger in PostgreSQL, fed from the Redis outbox by the ledger worker."""

from pathlib import Path

from quanyi.db import load_queries

queries = load_queries(Path(__file__).with_name("queries.sql"))
