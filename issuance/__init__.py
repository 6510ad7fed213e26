"""The channel-facing claim API and the hot path behind it."""

from quanyi.stores.db import load_queries

queries = load_queries(__name__)
