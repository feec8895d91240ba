"""The frames the gateway writes to its trace exporter child: what they hold, and that building
one leaves the event loop turns to serve calls."""

from __future__ import annotations

import orjson

from llmops.slices import Slices
from llmops.tracing.exporter import _frame, _framed
from tests.unit.turns import turns_during

RECORDS = [
    {"request_id": f"req-{n}", "messages": [{"role": "user", "content": "é" * n}], "usage": None}
    for n in range(5)
]


async def test_a_frame_is_its_records_as_one_length_prefixed_json_array() -> None:
    frame = await _frame(RECORDS, Slices(3600.0))
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert orjson.loads(frame[4:]) == RECORDS


def test_a_frame_of_the_request_logs_lines_holds_the_same_records() -> None:
    lines = [orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in RECORDS]
    frame = _framed(lines)  # the lines' newlines are whitespace between the array's items
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert orjson.loads(frame[4:]) == RECORDS


async def test_building_a_frame_gives_the_loop_a_turn_when_the_budget_is_spent() -> None:
    no_budget = Slices(0.0, share=0.0)  # a turn after every record
    assert await turns_during(_frame(RECORDS, no_budget)) == len(RECORDS)
    assert await turns_during(_frame(RECORDS, Slices(3600.0))) == 0  # budget never spent
