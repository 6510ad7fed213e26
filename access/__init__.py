"""Who may do what: staff accounts and sessions, channels and their request signatures, audit."""

from pathlib import Path

from quanyi.db import load_queries

queries = load_queries(Path(__file__).with_name("queries.sql"))
