"""Long work on the event loop, cut into short slices so that calls are served between them.

At concurrency 1 a call needs about four turns of the loop (its request, the upstream write,
the upstream answer, its response), and each turn can wait behind one slice of background
work: with the request-log flush built 8 records per slice (~0.4 ms here), a call that
overlapped a flush could wait ~1.5 ms. A time budget rather than a count of items keeps each
slice to the budget plus one item, whatever items cost (long messages, a slow machine). The
price is more turns: ~1% more instructions per call at most (measured under valgrind, where
every item is a turn). It did not by itself remove the request log's p99 excess at
concurrency 1 (docs/benchmarks.md, session 6).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from time import perf_counter, thread_time
from typing import Any

SLICE_S = 0.0001  # work between two turns of the loop: 0.1 ms, at least
OFFER_S = 0.0003  # a background process offers the CPU after this much of its own CPU time
SHARE = 0.5  # or half the loop thread's CPU time spent on calls while the slice waited its turn
_yield_cpu: Callable[[], None] | None = None  # set by `share_cpu()`
_in_slices = 0.0  # CPU time of the loop's thread spent in slices, every `Slices` together


def share_cpu() -> None:
    """In a process that only does background work (the trace exporter): at each turn, also
    offer the CPU to other processes (`sched_yield`). The kernel otherwise lets a running task
    finish its time slice (~1.5 ms on this 2-CPU machine) before a woken one, such as the
    gateway on the same CPU, gets it; a yield ends the slice early when someone is waiting,
    and costs a system call (~1 us) per slice when no one is."""
    global _yield_cpu
    _yield_cpu = getattr(os, "sched_yield", None)  # not on Windows


def cpu_offers(budget_s: float = OFFER_S) -> Callable[[], None]:
    """For a process that only does background work in runs of short items (the request-log
    builder): a callable to run between items, which offers the CPU (`sched_yield`) once the
    process has spent `budget_s` of CPU time since it last did. A run of ~64 records is ~4 ms
    of CPU, and a gateway woken on the same CPU waited for it (c=1 p99 +1.2 ms over the
    gateway alone); a yield after every ~60 us record is a context switch per record whenever
    anything else is runnable, and still missed the +1 ms target. After 0.3 ms of CPU it met
    it in three full runs, at the same CPU per call at c=64 (docs/benchmarks.md, session 11).
    CPU time, not wall time: time spent blocked on a read or preempted is not work that
    delays anyone. Does nothing where there is no `sched_yield` (Windows)."""
    yield_cpu = getattr(os, "sched_yield", None)
    until = thread_time() + budget_s

    def offer() -> None:
        nonlocal until
        if yield_cpu is None:
            return
        now = thread_time()
        if now >= until:
            yield_cpu()
            until = now + budget_s

    return offer


class Slices:
    """`await slices.turn()` between items of work: gives the loop a turn once the slice's
    budget is spent. The budget is `budget_s`, or `share` times the CPU time the loop's thread
    spent on other work than slices (calls) before it came back, if that is longer.

    Under load one turn of the loop serves many calls, and a fixed 0.1 ms per turn would let
    background work fall further behind with every call (at concurrency 64 here, the request
    log and the traces stopped for as long as the load lasted). With `share` each background
    task keeps up, taking at most half as long as the calls did; the writer's flush and the
    trace frames, together, at most half of a loaded loop. CPU time, not wall time: a loop
    thread the kernel or the hypervisor did not run meanwhile (another process, steal) served
    no calls, and must not lengthen the next slice. Costs a clock read per item, and two
    reads of the thread's CPU time per turn."""

    __slots__ = ("_budget", "_cpu", "_share", "_until")

    def __init__(self, budget_s: float = SLICE_S, share: float = SHARE) -> None:
        self._budget = budget_s
        self._share = share
        self._until = perf_counter() + budget_s
        self._cpu = thread_time()  # when this slice started, in the thread's CPU time

    async def turn(self) -> None:
        if perf_counter() < self._until:
            return
        global _in_slices
        cpu = thread_time()
        _in_slices += cpu - self._cpu
        tally = _in_slices
        if _yield_cpu is not None:
            _yield_cpu()
        await asyncio.sleep(0)
        self._cpu = thread_time()
        calls = self._cpu - cpu - (_in_slices - tally)  # other slices meanwhile excepted
        self._until = perf_counter() + max(self._budget, self._share * calls)


async def release(items: list[Any], slices: Slices) -> None:
    """Empty `items` a few at a time, giving the loop its turns: dropping the last reference
    to a batch all at once frees every object in it in one turn, which a call at concurrency
    1 would wait behind. Measured here for 500 calls: ~0.6 ms for their JSON lines (what the
    writer's flush releases), ~0.8 ms for their records, ~0.3 ms for the calls themselves.
    Only for a list no one else keeps: its items are freed as they are taken out."""
    while items:
        items.pop()
        await slices.turn()
