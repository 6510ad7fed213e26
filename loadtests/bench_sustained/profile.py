"""Where a process's time goes under load: py-spy sampling it for a while (`py-spy record
--format raw`, collapsed stacks), summed into each function's own share (the samples where it was
running) and total share (those where it was on the stack)."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from loadtests.procs import BIN, REPO_ROOT, run_tool

RATE_HZ = 100
TOP = 15
# Frames on nearly every stack of the main thread (the event loop, main) say nothing by total
# share: left out of that ranking when on this share of the most common frame's samples.
ENTRY_SHARE = 0.9


@dataclass(frozen=True)
class Frame:
    name: str  # "function (module path)"
    own: float  # share of the active samples where it was the running frame
    total: float  # share where it was anywhere on the stack


@dataclass(frozen=True)
class Profile:
    process: str
    samples: int  # active samples (py-spy leaves out threads waiting for I/O)
    expected: int  # samples in the window at RATE_HZ, active or not
    by_own: list[Frame]
    by_total: list[Frame]

    @property
    def busy(self) -> float:
        return self.samples / self.expected if self.expected else 0.0


def py_spy() -> str | None:
    """The venv's py-spy (the dev extra), else one on PATH."""
    local = BIN / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def short(frame: str) -> str:
    """`handle (/…/site-packages/aiohttp/web_protocol.py)` -> `handle (aiohttp/web_protocol.py)`."""
    match = re.fullmatch(r"(.*) \((.*)\)", frame)
    if not match:
        return frame
    name, path = match.groups()
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":  # the standard library: drop the version folder
                path = path.split("/", 1)[-1]
            break
    else:
        root = f"{REPO_ROOT}/"
        path = path.removeprefix(root)
    return f"{name} ({path})"


def summarise(raw: str, process: str, expected: int, top: int = TOP) -> Profile:
    """Collapsed stacks, one `frame;frame;...;leaf count` a line, into the top frames."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):  # a recursive function counts once per sample
            total[frame] += count

    def frames_of(counter: Counter[str], most: float) -> list[Frame]:
        frames = [
            Frame(name, own[name] / samples, total[name] / samples)
            for name, _ in counter.most_common()
        ]
        return [f for f in frames if f.total < most][:top]

    if not samples:
        return Profile(process, 0, expected, [], [])
    by_total = frames_of(total, ENTRY_SHARE * max(total.values()) / samples)
    return Profile(process, samples, expected, frames_of(own, 2.0), by_total)


async def record(tool: str, pid: int, process: str, seconds: int, out: Path) -> Profile:
    """Sample process `pid` for `seconds` (non-blocking: the process is not paused to read
    it, so the figures it is measured under are barely touched)."""
    argv = [tool, "record", "--pid", str(pid), "--duration", str(seconds)]
    argv += ["--rate", str(RATE_HZ), "--nonblocking", "--nolineno", "--format", "raw"]
    await run_tool([*argv, "--output", str(out)])
    raw = await asyncio.to_thread(out.read_text, errors="replace")
    return summarise(raw, process, RATE_HZ * seconds)
