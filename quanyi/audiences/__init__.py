"""Audiences (customer segments): named sets of customer ids imported from the data
warehouse, kept in Redis as versioned buckets so a new import replaces the old one at once."""

from quanyi.stores.db import load_queries

queries = load_queries(__name__)
