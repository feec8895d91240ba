"""Slices: long work on the event loop gives the loop a turn once its time budget is spent."""

from __future__ import annotations

import asyncio
import itertools
import weakref

import pytest

from llmops import slices
from llmops.slices import Slices, release
from tests.unit.turns import turns_during


async def turns_taken(work: Slices, items: int) -> int:
    """How many turns another task got while `items` items of work ran with `work`."""

    async def items_of_work() -> None:
        for _ in range(items):
            await work.turn()

    return await turns_during(items_of_work())


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

    monkeypatch.setattr(slices.os, "sched_yield", sched_yield, raising=False)
    monkeypatch.setattr(slices, "_yield_cpu", None)  # the test process's own setting, restored
    assert await turns_taken(Slices(0.0, share=0.0), 5) == 5
    assert yields == 0  # the gateway's process keeps the CPU between its own turns
    slices.share_cpu()
    assert await turns_taken(Slices(0.0, share=0.0), 5) == 5
    assert yields == 5
    assert await turns_taken(Slices(3600.0), 5) == 0
    assert yields == 5  # no turn, no yield


def test_a_background_process_offers_the_cpu_once_its_budget_of_cpu_time_is_spent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = itertools.count(0.0, 0.25)  # each record takes a quarter of the budget (exact floats)
    monkeypatch.setattr(slices, "thread_time", lambda: next(clock))
    yields = 0

    def sched_yield() -> None:
        nonlocal yields
        yields += 1

    monkeypatch.setattr(slices.os, "sched_yield", sched_yield, raising=False)
    offer = slices.cpu_offers(1.0)  # reads the clock: 0
    for _ in range(25):
        offer()  # the 4th read is at 1.0: a yield, and the budget starts again from there
    assert yields == 6
    monkeypatch.delattr(slices.os, "sched_yield")
    offer = slices.cpu_offers(0.0)
    offer()  # Windows: nothing to offer the CPU with
    assert yields == 6


class Thing:
    """An item that can be watched with a weak reference (records and lines cannot)."""


async def test_release_frees_the_items_as_it_takes_them_a_slice_per_turn() -> None:
    items = [Thing() for _ in range(20)]
    alive = [weakref.ref(thing) for thing in items]
    seen: list[int] = []  # how many items were alive at each of another task's turns

    async def watch() -> None:
        while True:
            seen.append(sum(ref() is not None for ref in alive))
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0)
    await release(items, Slices(0.0, share=0.0))  # a turn after each item
    watcher.cancel()
    assert items == []
    assert seen == list(range(20, -1, -1))  # one freed per turn, none kept alive by release
    items = [Thing() for _ in range(20)]
    assert await turns_during(release(items, Slices(3600.0))) == 0  # within the budget
    assert items == []


class Clocks:
    """The wall clock and the loop thread's CPU clock, moved by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.wall = self.cpu = 0.0
        monkeypatch.setattr(slices, "perf_counter", lambda: self.wall)
        monkeypatch.setattr(slices, "thread_time", lambda: self.cpu)

    def run(self, seconds: float, *, cpu: bool = True) -> None:
        self.wall += seconds
        self.cpu += seconds if cpu else 0.0


async def loaded_loop(clocks: Clocks, calls_s: float, steal_s: float = 0.0) -> asyncio.Task[None]:
    """A loop under load: each of its turns serves calls for `calls_s` of CPU, and the thread
    waits `steal_s` more (not running) as well."""

    async def calls() -> None:
        while True:
            await asyncio.sleep(0)
            clocks.run(calls_s)
            clocks.run(steal_s, cpu=False)

    task = asyncio.ensure_future(calls())
    await asyncio.sleep(0)
    return task


async def work(clocks: Clocks, slices_: Slices, items: int, done: list[int]) -> int:
    """`items` items of 1 ms each; returns how many turns the loop had meanwhile."""
    turns = 0
    for _ in range(items):
        clocks.run(0.001)
        done.append(1)
        before = clocks.wall
        await slices_.turn()
        turns += clocks.wall != before
    return turns


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_under_load_a_slice_lasts_half_as_long_as_the_calls_served_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clocks = Clocks(monkeypatch)
    task = await loaded_loop(clocks, calls_s=0.010)
    # after the first turn, 10 ms of calls buy 5 ms of work: a turn every 5 items
    assert await work(clocks, Slices(0.0001), 21, []) == 5
    assert await work(clocks, Slices(0.0001, share=0.0), 21, []) == 21  # a turn per item
    await stop(task)


async def test_two_background_tasks_together_take_at_most_half_of_a_loaded_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clocks = Clocks(monkeypatch)
    task = await loaded_loop(clocks, calls_s=0.010)
    done: list[int] = []
    start = clocks.cpu
    await asyncio.gather(
        work(clocks, Slices(0.0001), 400, done), work(clocks, Slices(0.0001), 400, done)
    )
    background = len(done) * 0.001
    calls = clocks.cpu - start - background
    # each counts only the calls' time, not the other's slices: 5 + 5 ms per 10 ms of calls
    assert 0.9 <= background / calls <= 1.1
    await stop(task)


async def test_time_the_thread_did_not_run_does_not_lengthen_a_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clocks = Clocks(monkeypatch)
    task = await loaded_loop(clocks, calls_s=0.0, steal_s=0.005)  # idle loop, 5 ms of steal
    assert await work(clocks, Slices(0.0001), 20, []) == 20  # still a turn per 1 ms item
    await stop(task)
