"""What every command module shares: the table of commands, the signature of a command, how
one is added to the parser, and help that gives every option's default."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quanyi.core.logs import setup_logging
from quanyi.core.settings import Settings

# What add_subparsers() returns: argparse has no public name for it, nor a generic one at run time.
if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Commands = argparse._SubParsersAction

# A command: the settings and its parsed options in, the exit code out. main() runs it on uvloop.
Handler = Callable[[Settings, argparse.Namespace], Awaitable[int]]


@dataclass(frozen=True)
class Command:
    module: str  # quanyi.cli.<module> defines its options (register()) and runs it
    summary: str


# Every command of `quanyi`, as `quanyi --help` lists them, each module's together.
COMMANDS = {
    "serve": Command("serve", "run the HTTP API"),
    "worker": Command("serve", "run a background worker"),
    "run": Command("serve", "migrate, then run the API and every worker in one process"),
    "migrate": Command("store", "create the database when missing and apply migrations"),
    "rebuild-redis": Command("store", "restore Redis from the ledger after Redis lost its data"),
    "reconcile": Command("store", "compare Redis, the outbox, the ledger and vendor outcomes"),
    "staff": Command("staff", "manage staff accounts"),
    "branch": Command("staff", "manage the branch tree"),
    "channel": Command("channels", "manage channels"),
    "demo": Command("demo", "load DEMO staff, channels, rights and an approved campaign"),
    "vendor-sim": Command("vendors", "run the simulated vendor (a real HTTP server)"),
    "vendor": Command("vendors", "manage vendors"),
    "dlq": Command("vendors", "grants whose fulfilment failed"),
    "statement": Command("vendors", "vendor statements"),
    "audience": Command("audiences", "manage audiences (customer segments) and their members"),
    "issuance": Command("issuances", "bulk issuances: create, approve, follow their progress"),
    "claim": Command("calls", "send one signed claim to a running API, as a channel would"),
    "grant": Command("calls", "read one grant (status, code, timeline), as a channel would"),
    "events": Command("events", "send card events to a running API, as the card system would"),
    "audit": Command("audit", "check the audit log's hash chain"),
    "reports": Command("reports", "rebuild the report rollups from the ledger"),
    "export": Command("export", "export grants, card events or rollups for the data warehouse"),
    "webhook": Command("webhook", "notifications to the bank's webhook: redrive failed ones"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, or says that it is required. An option whose
    default is not a plain value (None: taken from elsewhere) says so in its own help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text  # a positional argument is always required
        if action.required:
            return f"{text} (required)".lstrip()
        if action.default is None:
            return text
        if action.default is False and action.nargs == 0:  # a flag: --force
            return f"{text} (default: off)"
        return super()._get_help_string(action)


def add_command(
    commands: Commands, name: str, handler: Handler, help: str | None = None
) -> argparse.ArgumentParser:
    """A command that runs `handler`; `help` defaults to its summary in COMMANDS (an action of
    a group, `staff create`, gives its own)."""
    help = help or COMMANDS[name].summary
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=help, formatter_class=HelpFormatter
    )
    parser.set_defaults(handler=handler)
    return parser


def add_group(commands: Commands, name: str) -> Commands:
    """`quanyi NAME ACTION ...`: a command made of actions (staff create, vendor list, ...)."""
    help = COMMANDS[name].summary
    group: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=help, formatter_class=HelpFormatter
    )
    group.set_defaults(handler=None, usage=group)  # `quanyi NAME` alone prints this help
    return group.add_subparsers(metavar="ACTION")


def start_logging(level: str) -> None:
    """JSON lines on stderr at `level` (the log_level setting), card numbers masked."""
    setup_logging(level)


def text_file(path: str) -> str:
    """An option naming a file, read as the options are parsed (`type=text_file`): a file that
    cannot be read is a usage error, said before anything starts."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{path}: {(exc.strerror or str(exc)).lower()}") from None
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{path}: not UTF-8 text") from None
