"""Vendors: the registry, adapters that fulfil grants at vendors (voucher codes, points, lounge
passes), the fulfilment worker, and signed redemption callbacks."""

from pathlib import Path

from quanyi.db import load_queries

queries = load_queries(Path(__file__).with_name("queries.sql"))
