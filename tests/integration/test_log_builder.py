"""Records built in the builder process (LLMOPS_LOG_PROCESS): the same lines as built in the
gateway's process, and no record lost or doubled when the child fails, stalls or cannot start."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmops import slices
from llmops.gateway.service import Attempt, CallInfo
from llmops.logs import builder
from llmops.logs.builder import decode, encode
from llmops.logs.record import build_record
from llmops.logs.store import LocalStore
from llmops.logs.writer import RequestLogWriter
from llmops.redact import Redactor
from tests.integration.test_log_writer import call, settings, stored_ids
from tests.unit.turns import Turns, counting_turns

pytestmark = pytest.mark.integration


def varied(n: int) -> CallInfo:
    """Calls of every shape the record reads: errors, streams, retries, secrets, registry."""
    info = call(n)
    info.received_at = 1_795_000_000.123456 + n * 0.37
    info.request_body = {
        "model": "gpt-4o",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "Mail bob@example.com or call +44 20 7946 0958."},
            {"role": "user", "content": f"card 4111 1111 1111 1111, question {n} é ✓"},
        ],
        "api_key": "sk-not-a-real-key-000000000000",
    }
    if n % 4 == 1:  # a stream with usage in its last chunk
        info.stream = True
        info.response_body = b""
        info.chunks = [
            b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"He"}}]}\n\n',
            b'data: {"choices":[{"index":0,"delta":{"content":"llo"},"finish_reason":"stop"}],'
            b'"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n',
            b"data: [DONE]\n\n",
        ]
    elif n % 4 == 2:  # a failure after a retry and a fallback
        info.attempts = [Attempt("gpt-4o", 429, None, 0.5), Attempt("gpt-4o-b", None, "timeout")]
        info.status, info.response_body = 504, b""
        info.error = {"type": "upstream_error", "code": "timeout", "message": "no answer"}
    elif n % 4 == 3:  # an answer that is not JSON, from a registry-served deployment
        info.response_body = b"<html>bad gateway</html>"
        info.registry = {"name": "support-bot", "version": "3", "alias": "champion"}
    return info


async def started_writer(tmp_path: Path, **overrides: Any) -> tuple[RequestLogWriter, LocalStore]:
    store = LocalStore(tmp_path / "store", "request-logs")
    writer = RequestLogWriter(
        settings(tmp_path, process=True, **overrides), store, Redactor(), instance="test-1"
    )
    return writer, store


async def each_call_written_once(writer: RequestLogWriter, store: LocalStore, count: int) -> None:
    """Add `count` calls, close the writer, and check that each is in the store once."""
    for n in range(count):
        writer.add(call(n))
    await writer.aclose()
    assert await stored_ids(store) == [f"req-{n:05d}" for n in range(count)]


def lines_in(store: LocalStore) -> list[bytes]:
    return sorted(
        line
        for path in store.root.rglob("*.jsonl")
        for line in path.read_bytes().splitlines(keepends=True)
    )


def test_a_call_survives_encoding() -> None:
    for n in range(8):
        info = varied(n)
        again = decode(orjson.loads(orjson.dumps(encode(info))))
        expected = build_record(info, Redactor(), content=True, instance="i")
        assert build_record(again, Redactor(), content=True, instance="i") == expected


async def test_the_child_writes_the_lines_the_gateway_would_have(tmp_path: Path) -> None:
    calls = [varied(n) for n in range(40)]
    writer, store = await started_writer(tmp_path)
    for info in calls:
        writer.add(info)
    await writer.aclose()
    assert writer._builder is not None and writer._builder._child is None  # stopped
    here = sorted(
        orjson.dumps(
            build_record(info, Redactor(), content=True, instance="test-1"),
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for info in calls
    )
    assert lines_in(store) == here
    # and none of them was built in this process: the child answered every call
    assert writer.stats["build_failures"] == 0
    assert writer.stats["written"] == 40
    text = b"".join(here).decode()
    assert "bob@example.com" not in text and "4111 1111" not in text and "sk-not" not in text


async def test_lines_of_two_hours_land_in_two_blobs(tmp_path: Path) -> None:
    first, second = call(1), call(2)
    first.received_at = 1_795_003_199.9  # the last moment of an hour
    second.received_at = 1_795_003_200.1  # the first of the next
    writer, store = await started_writer(tmp_path)
    writer.add(first)
    writer.add(second)
    await writer.aclose()
    hours = sorted(p.parent.name for p in store.root.rglob("*.jsonl"))
    assert len(hours) == 2 and hours[0] != hours[1]


async def test_a_flush_waits_for_the_childs_lines(tmp_path: Path) -> None:
    writer, store = await started_writer(tmp_path, flush_s=60)
    for n in range(30):
        writer.add(call(n))
    await writer.flush()  # the Functions host's end-of-invocation flush
    assert await stored_ids(store) == [f"req-{n:05d}" for n in range(30)]
    await writer.aclose()


async def test_a_child_killed_mid_run_loses_and_doubles_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer, store = await started_writer(tmp_path)
    for n in range(300):
        writer.add(call(n))
        if n % 50 == 0:
            await asyncio.sleep(0.01)
        if n == 150:
            child = writer._builder._child if writer._builder else None
            assert child is not None
            os.kill(child.process.pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    for n in range(300, 400):
        writer.add(call(n))
    await writer.aclose()
    assert await stored_ids(store) == [f"req-{n:05d}" for n in range(400)]
    assert "request-log builder exited" in caplog.text


async def reaped(process: subprocess.Popen[bytes]) -> int | None:
    """The exit status the builder collected for `process` (this does not wait for it
    itself: `returncode` is set only by a `poll` or `wait`), None after 2 s: a zombie."""
    for _ in range(40):
        if process.returncode is not None:
            break
        await asyncio.sleep(0.05)
    return process.returncode


async def test_a_child_that_stalls_is_replaced_by_building_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer, store = await started_writer(tmp_path, flush_s=60)
    writer.add(call(0))
    await writer.flush()  # starts the child, which answers
    child = writer._builder._child if writer._builder else None
    assert child is not None
    process = child.process
    os.kill(process.pid, signal.SIGSTOP)  # alive, and answers nothing
    try:
        for n in range(1, 20):
            writer.add(call(n))
        assert writer._builder is not None
        started = time.monotonic()
        await writer._builder.settle(0.3)  # what a flush does, with a shorter patience
        assert time.monotonic() - started < 2
        assert await reaped(process) == -signal.SIGKILL  # stopped, so it cannot answer late
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
    await writer.aclose()
    assert await stored_ids(store) == [f"req-{n:05d}" for n in range(20)]
    assert "did not answer" in caplog.text


async def test_a_child_that_cannot_start_costs_no_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    caplog.set_level(logging.WARNING)
    writer, store = await started_writer(tmp_path)
    await each_call_written_once(writer, store, 25)
    assert "could not start the request-log builder" in caplog.text


async def test_a_garbled_answer_stops_the_child_and_keeps_its_calls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a "child" that answers every frame with a header claiming more calls than it got
    fake = tmp_path / "garbling.py"
    fake.write_text(
        "import sys, json\n"
        "while True:\n"
        "    head = sys.stdin.buffer.read(4)\n"
        "    if len(head) < 4: break\n"
        "    sys.stdin.buffer.read(int.from_bytes(head, 'big'))\n"
        "    h = json.dumps({'calls': 999, 'failures': 0, 'groups': []}).encode()\n"
        "    body = len(h).to_bytes(4, 'big') + h\n"
        "    sys.stdout.buffer.write(len(body).to_bytes(4, 'big') + body)\n"
        "    sys.stdout.buffer.flush()\n"
    )
    real = subprocess.Popen

    def garbling(argv: list[str], **kwargs: Any) -> Any:
        if argv[-2:] == ["-m", "llmops.logs.builder"]:
            argv = [argv[0], str(fake)]
        return real(argv, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", garbling)
    writer, store = await started_writer(tmp_path)
    await each_call_written_once(writer, store, 10)
    assert "answered ValueError" in caplog.text


async def test_the_builder_follows_the_redactors_mode_and_content_setting(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store", "request-logs")
    redactor = Redactor(mode="hash", salt=b"pepper", extra={"ticket": r"TICKET-\d+"})
    writer = RequestLogWriter(
        settings(tmp_path, process=True, content=False), store, redactor, instance="i"
    )
    info = varied(0)
    info.request_body = {**(info.request_body or {}), "user": "TICKET-42"}
    writer.add(info)
    await writer.aclose()
    (line,) = lines_in(store)
    assert line == orjson.dumps(
        build_record(info, redactor, content=False, instance="i"),
        option=orjson.OPT_APPEND_NEWLINE,
    )
    request = json.loads(line)["request"]
    assert "messages" not in request and "user" not in request["params"]


async def behind_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[RequestLogWriter, LocalStore, Any, list[int]]:
    """A writer whose child answered once, is then SIGSTOPped (it answers nothing) and sent
    100 calls, the bound (lowered from 5,000): the writer, its store, the child, and the
    numbers of the calls built here since."""
    monkeypatch.setattr(builder, "MAX_UNANSWERED", 100)
    monkeypatch.setattr(builder, "FRAME_CALLS", 10)
    writer, store = await started_writer(tmp_path, flush_s=60)
    writer.add(call(0))
    await writer.flush()  # starts the child, which answers
    assert writer._builder is not None
    child = writer._builder._child
    assert child is not None
    here: list[int] = []
    build_here = writer._builder._build_here

    def spied(info: CallInfo) -> None:
        here.append(int(info.request_id[4:]))
        build_here(info)

    writer._builder._build_here = spied
    os.kill(child.process.pid, signal.SIGSTOP)
    for n in range(1, 101):
        writer.add(call(n))
        await asyncio.sleep(0)
    assert len(writer._builder._sent) == 100 and not here
    return writer, store, child, here


async def test_a_child_too_far_behind_keeps_its_calls_and_further_ones_are_built_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, store, child, here = await behind_child(tmp_path, monkeypatch)
    assert writer._builder is not None
    try:
        for n in range(101, 150):
            writer.add(call(n))
            await asyncio.sleep(0)
        await asyncio.sleep(3 * builder.LINGER_S)  # the last frame goes
        assert here == list(range(101, 150))  # built here: the child has 100 unanswered
        assert len(writer._builder._sent) == 100
        assert writer._builder._child is child and child.process.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.process.pid, signal.SIGCONT)
    await writer.flush()  # the child catches up: its 100 lines come back
    assert writer._builder._child is child and child.process.poll() is None
    assert not writer._builder._sent
    writer.add(call(150))
    await writer.flush()
    assert here == list(range(101, 150))  # and the child builds again
    await writer.aclose()
    assert await stored_ids(store) == [f"req-{n:05d}" for n in range(151)]
    assert "calls behind" in caplog.text
    assert writer.stats["build_failures"] == 0


async def test_a_child_at_the_bound_that_answers_nothing_is_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builder, "SETTLE_S", 0.3)
    writer, store, child, here = await behind_child(tmp_path, monkeypatch)
    assert writer._builder is not None
    try:
        writer.add(call(101))
        await asyncio.sleep(3 * builder.LINGER_S)  # within 0.3 s of its last answer: behind
        assert writer._builder._child is child and here == [101]
        await asyncio.sleep(0.3)
        writer.add(call(102))  # no answer for longer than SETTLE_S: stuck
        await asyncio.sleep(3 * builder.LINGER_S)
        assert writer._builder._child is None
        assert await reaped(child.process) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.process.pid, signal.SIGCONT)
    await writer.aclose()
    assert sorted(here) == list(range(1, 103))  # the child's 100 as well
    assert await stored_ids(store) == [f"req-{n:05d}" for n in range(103)]
    assert "answered nothing" in caplog.text


async def test_an_answer_that_is_not_utf8_is_built_here_as_it_would_have_been(
    tmp_path: Path,
) -> None:
    info = call(7)
    info.response_body = b'{"choices": [{"index": 0, "message": {"content": "caf\xe9"}}]}'
    writer, store = await started_writer(tmp_path)
    writer.add(info)
    writer.add(call(8))  # and the next call still goes to the child
    await writer.aclose()
    here = orjson.dumps(
        build_record(info, Redactor(), content=True, instance="test-1"),
        option=orjson.OPT_APPEND_NEWLINE,
    )
    assert here in lines_in(store)
    assert await stored_ids(store) == ["req-00007", "req-00008"]


async def test_a_sink_that_needs_records_gets_the_childs_lines_parsed_in_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given: list[tuple[int, list[str]]] = []  # the other task's turns when the sink was called
    counted: list[Turns] = []

    def sink(records: list[dict[str, Any]]) -> None:  # metrics, in-process traces
        given.append((counted[0].count, [r["request_id"] for r in records]))

    store = LocalStore(tmp_path / "store", "request-logs")
    logs = settings(tmp_path, process=True, flush_s=60)
    writer = RequestLogWriter(logs, store, Redactor(), instance="test-1", sinks=[sink])
    for n in range(300):
        writer.add(call(n))
    assert writer._builder is not None
    await writer._builder.settle()  # the lines are back from the child, none parsed yet
    async with counting_turns() as turns:
        counted.append(turns)
        clock = itertools.count(0.0, 1.0)  # from here each line parsed spends a slice's budget
        monkeypatch.setattr(slices, "perf_counter", lambda: next(clock))
        await writer.flush()
    monkeypatch.undo()
    [(at, ids)] = given
    assert ids == [f"req-{n:05d}" for n in range(300)]
    assert at >= 300  # the loop had a turn after each line, before the sink's call
    await writer.aclose()
    assert await stored_ids(store) == ids


async def test_a_line_sinks_cannot_parse_costs_the_sinks_that_batch_not_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    given: list[list[str]] = []
    store = LocalStore(tmp_path / "store", "request-logs")
    logs = settings(tmp_path, process=True, flush_s=60)
    writer = RequestLogWriter(
        logs,
        store,
        Redactor(),
        instance="test-1",
        sinks=[lambda records: given.append([r["request_id"] for r in records])],
    )
    writer.add(call(0))
    await writer.flush()
    hour = time.strftime("%Y-%m-%dT%H", time.gmtime())  # as `received_at[:13]`
    writer._place(hour, b"not json\n", 1)  # what a child with a bug could send
    writer.add(call(1))
    await writer.flush()  # does not raise
    writer.add(call(2))
    await writer.aclose()
    assert given == [["req-00000"], ["req-00002"]]  # the sinks missed the batch, nothing else
    assert await stored_ids(store) == ["req-00000", "req-00001", "req-00002"]
    assert "sink" in caplog.text and "failed" in caplog.text
