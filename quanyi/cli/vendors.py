"""`quanyi vendor-sim`, `quanyi vendor ...`, `quanyi dlq ...` and `quanyi statement import`:
the vendors that fulfil grants, what failed at them, and their daily statements."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import BaseModel

from quanyi.cli.command import Commands, add_command, add_group, text_file
from quanyi.core.settings import Settings
from quanyi.runtime import open_stores
from quanyi.vendors.model import RetryBody, VendorBody
from quanyi.vendors.operations import (
    cli_staff,
    create_vendor,
    dead_letters,
    import_codes,
    keygen,
    list_vendors,
    redrive,
)
from quanyi.vendors.registry import ADAPTERS
from quanyi.vendors.simulator import SimulatorConfig, run_simulator
from quanyi.vendors.statements import reconcile

SIM_DEFAULTS = SimulatorConfig()


def register(commands: Commands) -> None:
    _simulator(commands)
    _vendor(commands)
    _dead_letters(commands)
    statement = add_group(commands, "statement")
    st_import = add_command(
        statement, "import", import_statement, "reconcile a vendor's daily statement (CSV)"
    )
    st_import.add_argument("--vendor", required=True, help="the vendor id")
    st_import.add_argument("--day", required=True, help="YYYY-MM-DD, local day")
    st_import.add_argument("--file", required=True, type=text_file, help="the statement (CSV)")


def _simulator(commands: Commands) -> None:
    sim = add_command(commands, "vendor-sim", simulate_vendor)
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sim.add_argument("--port", type=int, default=8099, help="port to listen on")
    sim.add_argument(
        "--latency-ms",
        type=float,
        default=SIM_DEFAULTS.latency_ms,
        help="added to every vendor call",
    )
    sim.add_argument(
        "--jitter-ms",
        type=float,
        default=SIM_DEFAULTS.jitter_ms,
        help="a random extra latency up to this",
    )
    sim.add_argument(
        "--error-rate",
        type=float,
        default=SIM_DEFAULTS.error_rate,
        help="share of calls answered 500, before any effect",
    )
    sim.add_argument(
        "--timeout-rate",
        type=float,
        default=SIM_DEFAULTS.timeout_rate,
        help="share of calls that hang, then answer 504",
    )
    sim.add_argument(
        "--key-file",
        type=text_file,
        help="the vendor's private key (PEM): signs responses and callbacks"
        " (default: none, unsigned)",
    )


def _vendor(commands: Commands) -> None:
    vendor = add_group(commands, "vendor")
    keys = add_command(
        vendor, "keygen", make_keys, "make an RSA key pair: private.pem (0600), public.pem"
    )
    keys.add_argument("--out", required=True, help="folder to write the pair to")
    create = add_command(vendor, "create", create_one, "register a vendor")
    create.add_argument("--id", required=True, help="the vendor id")
    create.add_argument("--name", required=True, help="a name people read")
    create.add_argument("--adapter", required=True, choices=ADAPTERS, help="how it is called")
    create.add_argument(
        "--base-url", help="where it answers; needed by every adapter but codepool (default: none)"
    )
    # The defaults are the API's (vendors/model.py): left out, the body leaves them out too.
    create.add_argument(
        "--timeout-ms",
        type=int,
        help=f"each call's timeout (default: {_default(VendorBody, 'timeout_ms')})",
    )
    create.add_argument(
        "--max-in-flight",
        type=int,
        help=f"calls under way at once at most (default: {_default(VendorBody, 'max_in_flight')})",
    )
    create.add_argument(
        "--max-attempts",
        type=int,
        help=f"calls per grant before it fails (default: {_default(RetryBody, 'max_attempts')})",
    )
    create.add_argument(
        "--public-key-file",
        action="append",
        type=text_file,
        default=[],
        help="the vendor's public key (PEM); twice while rotating (default: none)",
    )
    create.add_argument(
        "--signing-key",
        help="our private key: file:PATH or env:VARIABLE (default: none, requests unsigned)",
    )
    add_command(vendor, "list", list_all, "list vendors")
    codes = add_command(
        vendor, "import-codes", load_codes, "load voucher codes (CSV) into a code pool"
    )
    codes.add_argument("--vendor", required=True, help="the codepool vendor id")
    codes.add_argument("--right", required=True, help="the right the codes are for")
    codes.add_argument("--file", required=True, help="one code a row, first column (CSV)")


def _dead_letters(commands: Commands) -> None:
    dlq = add_group(commands, "dlq")
    listed = add_command(dlq, "list", list_dead, "list dead-lettered fulfilments")
    listed.add_argument("--limit", type=int, default=100, help="list at most this many")
    again = add_command(dlq, "redrive", redrive_dead, "put failed grants back for fulfilment")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead-lettered grant")
    which.add_argument(
        "--grant",
        action="append",
        help="a grant id; repeat for more (default: none; give this or --all)",
    )


async def simulate_vendor(settings: Settings, args: argparse.Namespace) -> int:
    config = SimulatorConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        error_rate=args.error_rate,
        timeout_rate=args.timeout_rate,
        private_key_pem=args.key_file,  # read as the options were parsed
    )
    print(
        f"vendor simulator on http://{args.host}:{args.port} (control: /_sim/stats, /_sim/config)"
    )
    await run_simulator(args.host, args.port, config)
    return 0


async def make_keys(settings: Settings, args: argparse.Namespace) -> int:
    private, public = keygen(Path(args.out))
    print(f"private key: {private} (keep it secret; register it as file:{private.resolve()})")
    print(f"public key:  {public} (give it to the other side)")
    return 0


async def create_one(settings: Settings, args: argparse.Namespace) -> int:
    body: dict[str, object] = {"id": args.id, "name": args.name, "adapter": args.adapter}
    for name in ("base_url", "timeout_ms", "max_in_flight", "signing_key"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.max_attempts is not None:
        body["retry"] = {"max_attempts": args.max_attempts}
    body["public_keys"] = args.public_key_file  # each file read as the options were parsed
    async with open_stores(settings) as stores:
        vendor = await create_vendor(stores.pool, body)
    print(f"vendor {vendor.id} created ({vendor.adapter})")
    return 0


async def list_all(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings, consumer_groups=False) as stores:
        vendors = await list_vendors(stores.pool)
    for v in vendors:
        print(
            f"{v.id}\t{v.adapter}\t{v.base_url or '-'}\tin-flight {v.max_in_flight}"
            f"\ttimeout {v.timeout_ms} ms\tattempts {v.max_attempts}\tkeys {len(v.public_keys)}"
        )
    return 0


async def load_codes(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings) as stores:
        result = await import_codes(
            stores.pool, stores.redis, stores.keys, args.vendor, args.right, Path(args.file)
        )
    print(
        f"read {result['read']}, added {result['added']}, refused as duplicates "
        f"{result['duplicates']}; pool now holds {result['pool']} codes"
    )
    return 0


async def list_dead(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings, consumer_groups=False) as stores:
        entries = await dead_letters(stores.redis, stores.keys, args.limit)
    for e in entries:
        print(
            f"{e['id']}\t{e['grant_id']}\t{e['vendor_id']}\tattempts {e['attempts']}"
            f"\t{e['at']}\t{e['error']}"
        )
    print(f"{len(entries)} dead-lettered fulfilments")
    return 0


async def redrive_dead(settings: Settings, args: argparse.Namespace) -> int:
    wanted = None if args.all else set(args.grant)
    async with open_stores(settings) as stores:
        results = await redrive(stores.pool, stores.redis, stores.keys, stores.lifecycle(), wanted)
    for grant_id, outcome in results:
        print(f"{grant_id}\t{outcome}")
    print(f"{sum(1 for _, o in results if o == 'redriven')} of {len(results)} redriven")
    return 0


async def import_statement(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings) as stores:
        report = await reconcile(
            stores.pool, cli_staff(), args.vendor, args.day, args.file, settings.zone
        )
    print(json.dumps({"statement_id": report["statement_id"], "summary": report["summary"]}))
    for bucket in ("mismatched", "missing_ours", "missing_theirs"):
        for entry in report[bucket]:
            print(f"{bucket}\t{json.dumps(entry)}")
    return 0


def _default(model: type[BaseModel], field: str) -> object:
    return model.model_fields[field].default
