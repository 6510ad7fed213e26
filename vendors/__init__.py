"""Vendors: the registry, adapters that fulfil grants at vendors (voucher codes, points, lounge
passes), the fulfilment worker, and signed redemption callbacks."""

from quanyi.stores.db import load_queries

queries = load_queries(__name__)
