"""Stock in Redis: what a campaign publishes for the hot path, and whether the store is ready."""
