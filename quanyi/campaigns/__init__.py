"""Rights catalog and campaigns: definitions in PostgreSQL, the maker-checker workflow, and the
publication of what the hot path needs to Redis."""

from quanyi.stores.db import load_queries

queries = load_queries(__name__)
