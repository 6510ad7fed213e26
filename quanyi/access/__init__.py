"""Who may do what: staff accounts and sessions, channels and their request signatures, audit."""

from quanyi.stores.db import load_queries

queries = load_queries(__name__)
