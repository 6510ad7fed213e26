"""Reports from our own ledger: what each campaign issued, what became of it and what it cost,
read from the rollups the ledger worker keeps (never from a vendor's word)."""

from quanyi.stores.db import load_queries

queries = load_queries(__name__)
