"""Counting the event loop's turns while a piece of work runs (slices, trace frames)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def turns_during(work: Awaitable[object]) -> int:
    """How many turns another task got while `work` ran."""
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.ensure_future(other())
    await asyncio.sleep(0)  # `other` starts and waits for its first turn
    await work
    taken = turns
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return taken
