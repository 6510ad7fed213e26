"""`python -m quanyi.cli`: the same as the `quanyi` command."""

from quanyi.cli import main

if __name__ == "__main__":  # not when a `serve --workers` process starts from this module
    raise SystemExit(main())
