"""The channel-facing claim API and the hot path behind it."""
