"""The `quanyi` command (`python -m quanyi.cli`): thin commands over quanyi.runtime."""

from quanyi.cli.main import main

__all__ = ["main"]
