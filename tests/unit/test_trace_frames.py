"""The frames the gateway writes to its trace exporter child: what they hold, and that building
one leaves the event loop turns to serve calls."""

from __future__ import annotations

import asyncio

import orjson

from llmops.slices import Slices
from llmops.tracing.exporter import _frame

RECORDS = [
    {"request_id": f"req-{n}", "messages": [{"role": "user", "content": "é" * n}], "usage": None}
    for n in range(5)
]


async def test_a_frame_is_its_records_as_one_length_prefixed_json_array() -> None:
    frame = await _frame(RECORDS, Slices(3600.0))
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert orjson.loads(frame[4:]) == RECORDS


async def test_building_a_frame_gives_the_loop_a_turn_when_the_budget_is_spent() -> None:
    served = 0

    async def calls() -> None:
        nonlocal served
        while True:
            await asyncio.sleep(0)
            served += 1

    task = asyncio.ensure_future(calls())
    await asyncio.sleep(0)
    await _frame(RECORDS, Slices(0.0, share=0.0))  # no budget: a turn after every record
    assert served == len(RECORDS)
    await _frame(RECORDS, Slices(3600.0))  # budget never spent: no turn
    assert served == len(RECORDS)
    task.cancel()
