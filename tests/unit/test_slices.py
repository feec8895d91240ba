"""Slices: long work on the event loop gives the loop a turn once its time budget is spent."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from llmops import slices
from llmops.slices import Slices


async def turns_taken(work: Slices, items: int) -> int:
    """How many turns another task got while `items` items of work ran with `work`."""
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.ensure_future(other())
    await asyncio.sleep(0)  # `other` starts and waits for its first turn
    for _ in range(items):
        await work.turn()
    taken = turns
    task.cancel()
    return taken


async def test_the_loop_gets_a_turn_each_time_the_budget_is_spent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = itertools.count(0.0, 0.00004)  # each item of work takes 40 us
    monkeypatch.setattr(slices, "perf_counter", lambda: next(clock))
    # 0.1 ms: a turn after the third item (120 us), the clock then read again: every 3 items
    assert await turns_taken(Slices(0.0001), 30) == 10


async def test_no_turn_within_the_budget_and_one_per_item_without_one() -> None:
    assert await turns_taken(Slices(3600.0), 50) == 0
    assert await turns_taken(Slices(0.0, share=0.0), 50) == 50


async def test_a_background_process_also_offers_the_cpu_at_each_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yields = 0

    def sched_yield() -> None:
        nonlocal yields
        yields += 1

    monkeypatch.setattr(slices.os, "sched_yield", sched_yield)
    monkeypatch.setattr(slices, "_yield_cpu", None)  # the test process's own setting, restored
    assert await turns_taken(Slices(0.0, share=0.0), 5) == 5
    assert yields == 0  # the gateway's process keeps the CPU between its own turns
    slices.share_cpu()
    assert await turns_taken(Slices(0.0, share=0.0), 5) == 5
    assert yields == 5
    assert await turns_taken(Slices(3600.0), 5) == 0
    assert yields == 5  # no turn, no yield


async def test_under_load_the_work_takes_up_to_a_third_of_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = 0.0
    monkeypatch.setattr(slices, "perf_counter", lambda: now)

    async def calls() -> None:  # a loaded loop: each of its turns serves calls for 10 ms
        nonlocal now
        while True:
            await asyncio.sleep(0)
            now += 0.010

    async def turns_for(work: Slices, items: int) -> int:
        nonlocal now
        turns = 0
        for _ in range(items):
            now += 0.001  # an item of work: 1 ms
            before = now
            await work.turn()
            turns += now != before  # the loop had a turn, and its calls took time
        return turns

    task = asyncio.ensure_future(calls())
    await asyncio.sleep(0)
    # after the first turn, 10 ms of calls buy 5 ms of work: a turn every 5 items
    assert await turns_for(Slices(0.0001), 21) == 5
    assert await turns_for(Slices(0.0001, share=0.0), 21) == 21  # a turn after every item
    task.cancel()
