"""SHA256withRSA (PKCS#1 v1.5) signatures, the scheme Alipay and WeChat Pay use, over
`TIMESTAMP "\\n" BODY`: on our calls to vendors, their responses, and their callbacks."""

from __future__ import annotations

import base64
import binascii

from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pkcs1_15

RsaKey = RSA.RsaKey


def generate_keypair(bits: int = 2048) -> tuple[str, str]:
    """(private PEM, public PEM)."""
    key = RSA.generate(bits)
    return key.export_key().decode(), key.public_key().export_key().decode()


def load_key(pem: str) -> RsaKey:
    return RSA.import_key(pem)


def signed_message(timestamp: str, body: bytes) -> bytes:
    return timestamp.encode() + b"\n" + body


def sign(private_key: RsaKey, timestamp: str, body: bytes) -> str:
    digest = SHA256.new(signed_message(timestamp, body))
    return base64.b64encode(pkcs1_15.new(private_key).sign(digest)).decode()


def verify(public_keys: list[RsaKey], timestamp: str, body: bytes, signature: str) -> bool:
    """True when any of the live keys (two during a rotation) made the signature."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    digest = SHA256.new(signed_message(timestamp, body))
    for key in public_keys:
        try:
            pkcs1_15.new(key).verify(digest, raw)
            return True
        except (ValueError, TypeError):
            continue
    return False
