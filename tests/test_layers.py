"""The architecture, checked: the layers contract holds, and every grant goes through the one
issuance entry point (`ClaimService`), the only code that runs claim.lua."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import quanyi

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(quanyi.__file__).resolve().parent
ENTRY_POINT = PACKAGE / "issuance" / "claims.py"


def test_no_module_imports_a_layer_above_its_own() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def _claim_script_users() -> list[str]:
    """Modules that read the `claim` script off a `Scripts` (or load claim.lua themselves)."""
    users = []
    for path in _modules():
        if path == PACKAGE / "stores" / "scripts.py":
            continue  # where the scripts are loaded
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            reads_attr = isinstance(node, ast.Attribute) and node.attr == "claim"
            loads_file = isinstance(node, ast.Constant) and node.value in ("claim", "claim.lua")
            if (reads_attr and _is_scripts(node)) or (loads_file and _in_lua_call(tree, node)):
                users.append(str(path.relative_to(PACKAGE.parent)))
                break
    return users


def _modules() -> list[Path]:
    """Every module of the package, through the links to inventory/, issuance/, vendors/."""
    found = []
    for folder, _, files in os.walk(PACKAGE, followlinks=True):
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    return sorted(found)


def _is_scripts(node: ast.Attribute) -> bool:
    # `scripts.claim`, `self._scripts.claim`, `(scripts or Scripts(redis)).claim`
    return "cripts" in ast.unparse(node.value)


def _in_lua_call(tree: ast.AST, constant: ast.Constant) -> bool:
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and constant in call.args:
            return "lua" in ast.unparse(call.func)
    return False


def test_only_the_issuance_entry_point_runs_claim_lua() -> None:
    assert _claim_script_users() == [str(ENTRY_POINT.relative_to(PACKAGE.parent))]
