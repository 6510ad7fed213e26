"""Quanyi: the rights inventory and issuance platform of a credit-card centre."""
