"""Vendor adapters and the fulfilment of grants at vendors (voucher codes, points, lounge passes)."""
