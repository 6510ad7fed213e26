"""Staff password hashing with scrypt (memory-hard, in the standard library).

scrypt costs ~25 ms of CPU and 16 MiB a call, on purpose. The API awaits it in a small thread
pool of its own (hashlib.scrypt releases the GIL), so a flood of logins never stalls the event
loop that serves claims; the pool's size bounds the CPU and memory a flood can take."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor

_N, _R, _P = 2**14, 8, 1
# Logins beyond this many at once wait their turn: hashing takes at most half the cores (the
# rest serve claims) and 16 MiB each.
HASHING_THREADS = max(1, min(4, (os.cpu_count() or 2) // 2))
_HASHING = ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="scrypt")


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
    )
    return hmac.compare_digest(actual, expected)


async def hash_password_off_loop(password: str) -> str:
    """hash_password in the hashing pool: the event loop keeps serving while it runs."""
    return await asyncio.get_running_loop().run_in_executor(_HASHING, hash_password, password)


async def verify_password_off_loop(password: str, stored: str) -> bool:
    """verify_password in the hashing pool: the event loop keeps serving while it runs."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_HASHING, verify_password, password, stored)
