"""Fulfilment: every grant issued at its vendor exactly once, by the fulfilment worker (worker.py:
the read loop; fulfiller.py: one grant; lanes.py: vendors and routes; tasks.py: side tasks)."""
