"""`quanyi vendor keygen`: a private key only its owner reads, and the public key that matches."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from quanyi.vendors import rsa

QUANYI = Path(sys.executable).with_name("quanyi")


# --- quanyi vendor keygen -----------------------------------------------------------------


def _keygen(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(QUANYI), "vendor", "keygen", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "QUANYI_LOG_LEVEL": "WARNING"},
        check=False,
    )


def test_keygen_writes_a_private_key_only_its_owner_reads_and_a_matching_public_key(
    tmp_path, key_pairs
):
    out = tmp_path / "keys" / "lounge-co"  # made as needed
    done = _keygen(out)
    assert done.returncode == 0, done.stderr
    private_path, public_path = out / "private.pem", out / "public.pem"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert str(private_path.resolve()) in done.stdout

    private = rsa.load_key(private_path.read_text())
    public = rsa.load_key(public_path.read_text())
    assert private.has_private() and not public.has_private()
    body = b'{"grant_id": "01J0000000000000000000000"}'
    signature = rsa.sign(private, "1767225600", body)
    assert rsa.verify([public], "1767225600", body, signature)
    assert not rsa.verify([public], "1767225601", body, signature)
    assert not rsa.verify([rsa.load_key(key_pairs.vendor_public)], "1767225600", body, signature)


def test_keygen_over_an_older_pair_leaves_the_private_key_owner_only(tmp_path):
    out = tmp_path / "keys"
    out.mkdir()
    old = out / "private.pem"
    old.write_text("an old key")
    old.chmod(0o644)
    done = _keygen(out)
    assert done.returncode == 0, done.stderr
    assert rsa.load_key(old.read_text()).has_private()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
