"""Stock in Redis: key names, the Lua scripts, and what a campaign publishes for the hot path."""
