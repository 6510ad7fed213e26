"""The grant ledger in PostgreSQL, fed from the Redis outbox by the ledger worker."""

from quanyi.stores.db import load_queries

queries = load_queries(__name__)
