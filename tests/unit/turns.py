"""Counting the event loop's turns while a piece of work runs (slices, trace frames)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager


class Turns:
    """How many turns another task has had so far (`count`)."""

    count = 0


@asynccontextmanager
async def counting_turns() -> AsyncIterator[Turns]:
    """Within the block, another task counts each turn of the loop it gets."""
    turns = Turns()

    async def other() -> None:
        while True:
            await asyncio.sleep(0)
            turns.count += 1

    task = asyncio.ensure_future(other())
    await asyncio.sleep(0)  # `other` starts and waits for its first turn
    try:
        yield turns
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def turns_during(work: Awaitable[object]) -> int:
    """How many turns another task got while `work` ran."""
    async with counting_turns() as turns:
        await work
        return turns.count
