"""Notifications to the bank: a durable outbox in PostgreSQL (queued in the transaction of what
they tell) and its delivery to the bank's webhook, signed and retried."""

from quanyi.stores.db import load_queries

queries = load_queries(__name__)
