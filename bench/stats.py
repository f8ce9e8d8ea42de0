"""Small statistics and process measurements for the benchmarks."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(values_s: list[float], *ps: float) -> dict[str, float]:
    """Percentiles in milliseconds."""
    out = {f"p{p:g}_ms": round(percentile(values_s, p) * 1000, 3) for p in ps}
    out["n"] = len(values_s)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def paced(period: float, count: int, step: Callable[[float], Awaitable[None]]) -> None:
    """`step(now)` `count` times on a schedule of one every `period` seconds (monotonic clock);
    steps that fall behind it run at once until they have caught up."""
    start = time.monotonic()
    for i in range(count):
        delay = start + i * period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await step(time.monotonic())
