"""`quanyi`: migrate, serve, run workers, manage staff and channels, load demo data.

The parser is assembled from the command modules; main() runs the chosen command and turns the
failures an operator can expect (a store unreachable, a bad setting, a refused request, a file
missing) into one line on stderr and exit code 1, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Collection
from zoneinfo import ZoneInfoNotFoundError

import uvloop

from quanyi.cli.command import COMMANDS, HelpFormatter, start_logging
from quanyi.core.errors import QuanyiError, StartupError
from quanyi.core.settings import Settings

FAILED, USAGE, INTERRUPTED = 1, 2, 130


def build_parser(wanted: Collection[str] | None = None) -> argparse.ArgumentParser:
    """Every command; those `wanted` (default: all) with their options. The module of a command
    is imported only when it is wanted: the others are just named and summarised, so that
    `quanyi --help` or a mistyped command does not import the whole service (about 1.5 s)."""
    parser = argparse.ArgumentParser(
        prog="quanyi", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    parser.set_defaults(handler=None, usage=parser)
    commands = parser.add_subparsers(metavar="COMMAND")
    for module in dict.fromkeys(c.module for c in COMMANDS.values()):
        names = [name for name, c in COMMANDS.items() if c.module == module]
        if wanted is None or not set(names).isdisjoint(wanted):
            importlib.import_module(f"quanyi.cli.{module}").register(commands)
        else:
            for name in names:
                commands.add_parser(name, help=COMMANDS[name].summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser([command] if command else []).parse_args(argv)  # exits 2 on a misuse
    if args.handler is None:  # `quanyi` or `quanyi vendor` alone
        args.usage.print_help()
        return USAGE
    try:
        settings = Settings.from_env()
    except (ValueError, OSError, ZoneInfoNotFoundError) as exc:
        return _failed(f"settings: {_message(exc)}")
    start_logging(settings.log_level)
    try:
        return uvloop.run(args.handler(settings, args))
    except KeyboardInterrupt:
        return INTERRUPTED
    except (StartupError, QuanyiError, OSError) as exc:  # SecretsKeyError is a QuanyiError
        return _failed(_message(exc))


def _failed(message: str) -> int:
    print(f"quanyi: {message}", file=sys.stderr)
    return FAILED


def _message(exc: BaseException) -> str:
    """One line: a refused request with the fields it names, a file with what went wrong."""
    if isinstance(exc, QuanyiError):
        fields = exc.details.get("fields") or {}
        named = "; ".join(f"{name}: {problem}" for name, problem in fields.items())
        return f"{exc.message} ({named})" if named else exc.message
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror.lower()}"
    if isinstance(exc, ZoneInfoNotFoundError):
        return str(exc.args[0]) if exc.args else "unknown time zone"
    return str(exc)
