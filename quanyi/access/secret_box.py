"""Secrets at rest: channel secrets are sealed with AES-256-GCM under the key that
`QUANYI_SECRETS_KEY` names (`file:PATH` or `env:VARIABLE`, 32 random bytes in hex or base64),
so the database alone never yields a secret that signs claims.

Without a configured key, a DEMO key is made once under var/demo-keys/ (like the demo RSA keys)
and used with a warning: good for `make run`, never for production.

A new key is rolled out with the old one named beside it (`QUANYI_SECRETS_KEY_PREVIOUS`): every
process then opens what either key sealed and seals under the new one, `quanyi channel rekey`
seals every stored secret again under the new key, and the old one can go (README "Rotating
the secrets key")."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import tempfile
from pathlib import Path

from Crypto.Cipher import AES
from Crypto.Random import get_random_bytes

from quanyi.core.errors import SecretsKeyError
from quanyi.core.settings import Settings

log = logging.getLogger(__name__)

# Under the working directory (the checkout for `make run`), never inside the installed package.
DEMO_KEY_FILE = Path("var") / "demo-keys" / "secrets.key"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
# Sealed values carry their format version: a later key or cipher can live beside this one.
SEALED_PREFIX = "v1:"


def parse_key(text: str) -> bytes:
    """32 bytes from 64 hex digits or from base64 (standard or URL-safe)."""
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 2 * KEY_BYTES else b""
    except ValueError:
        key = b""
    if not key:
        try:
            key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(
            f"the secrets key must be {KEY_BYTES} random bytes, as 64 hex digits or base64 "
            "(make one with: python3 -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return key


def read_key(reference: str) -> bytes:
    """The key a `file:PATH` or `env:VARIABLE` reference names."""
    kind, _, where = reference.partition(":")
    if kind == "file":
        try:
            return parse_key(Path(where).read_text())
        except OSError as exc:
            raise SecretsKeyError(f"QUANYI_SECRETS_KEY: cannot read {where}: {exc}") from None
    if kind == "env":
        if where not in os.environ:
            raise SecretsKeyError(f"QUANYI_SECRETS_KEY: environment variable {where} is not set")
        return parse_key(os.environ[where])
    raise SecretsKeyError("QUANYI_SECRETS_KEY must be file:PATH or env:VARIABLE")


def write_key_file(path: Path) -> None:
    """A new random key at `path` (0600), unless one is there already. Made aside and linked
    in, so that processes starting together all end up with the same key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secrets-key-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


class SecretBox:
    """Seals and opens short secrets. Each sealed value is bound to its context (the channel
    id), so a sealed secret copied onto another row does not open. Seals under `key`; opens
    what `key` or, while a new key is rolled out, `previous` sealed."""

    def __init__(self, key: bytes, previous: bytes | None = None) -> None:
        for one in (key, previous):
            if one is not None and len(one) != KEY_BYTES:
                raise SecretsKeyError(f"the secrets key must be {KEY_BYTES} bytes")
        self._key = key
        self._previous = previous if previous != key else None

    @property
    def rolling(self) -> bool:
        """Whether a previous key is named beside the key (a key rotation under way)."""
        return self._previous is not None

    def seal(self, plaintext: str, context: str) -> str:
        nonce = get_random_bytes(NONCE_BYTES)
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce)
        cipher.update(context.encode())
        ciphertext, tag = cipher.encrypt_and_digest(plaintext.encode())
        return SEALED_PREFIX + base64.b64encode(nonce + ciphertext + tag).decode()

    def open(self, sealed: str, context: str) -> str:
        return self.open_with_key(sealed, context)[0]

    def open_with_key(self, sealed: str, context: str) -> tuple[str, bool]:
        """The secret, and whether it was sealed under the key (False: under the previous one,
        to be sealed again by `quanyi channel rekey`)."""
        if not sealed.startswith(SEALED_PREFIX):
            raise SecretsKeyError(f"{context}: not a sealed secret")
        try:
            raw = base64.b64decode(sealed[len(SEALED_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        nonce, body = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        for key in (self._key, self._previous):
            if key is None or len(body) < TAG_BYTES:
                continue
            cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
            cipher.update(context.encode())
            try:
                plain = cipher.decrypt_and_verify(body[:-TAG_BYTES], body[-TAG_BYTES:])
            except ValueError:  # the tag does not match: another key, or altered
                continue
            return plain.decode(), key is self._key
        named = (
            "QUANYI_SECRETS_KEY or QUANYI_SECRETS_KEY_PREVIOUS name"
            if self.rolling
            else ("QUANYI_SECRETS_KEY names")
        )
        raise SecretsKeyError(
            f"{context}: its stored secret does not open with the key {named} (it was sealed"
            " under another key, or altered)"
        )


def secret_box(settings: Settings) -> SecretBox:
    """The box for the configured key; the DEMO key (made when missing) when none is set."""
    if settings.secrets_key:
        previous = settings.secrets_key_previous
        return SecretBox(read_key(settings.secrets_key), read_key(previous) if previous else None)
    if not DEMO_KEY_FILE.exists():
        write_key_file(DEMO_KEY_FILE)
    log.warning(
        "QUANYI_SECRETS_KEY is not set: channel secrets are sealed with the DEMO key %s "
        "(never in production)",
        DEMO_KEY_FILE,
    )
    return SecretBox(parse_key(DEMO_KEY_FILE.read_text()))
