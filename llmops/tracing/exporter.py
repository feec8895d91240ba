"""Traces exported from a separate process, so building them does not take the gateway's GIL.

Building a call's OTLP span costs about as much CPU as building its request-log record
(docs/benchmarks.md, session 5), and it runs in the process that serves the calls. With
`LLMOPS_TRACE_PROCESS=on` (the default for OTLP export), `ProcessTraceSink` hands each batch
of records to a child process instead (`python -m llmops.tracing.exporter`), as the JSON
the request log already made of them, and the child runs the `OtlpTraceSink` of the
in-process mode. The gateway's share per call is a share of a join and of a pipe write.

Protocol: the parent writes frames to the child's stdin (4-byte big-endian length, then a JSON
array of up to `FRAME_RECORDS` records: the request log's own JSON lines, joined, or, for
records handed over without them, serialised in the loop's slices, llmops/slices.py); the
child hands them to one sink as they come and answers, in order, with JSON lines on stdout
once records are settled: `{"frames": k, "traced": n, "errors": n, "dropped": n}` covers the
next k frames. Closing stdin asks the
child to flush and exit. The child's settings come in `LLMOPS_TRACE_CHILD` (JSON); its log
lines go to the gateway's stderr.

Failures: a child that cannot start, or exits, costs no call. Its unanswered records count as
errors, it is started again on the next batch (not before `DOWN_S` seconds), and it is logged
once. Records waiting to be written are bounded by `LLMOPS_TRACE_QUEUE_RECORDS`; beyond, they
are dropped and counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections import deque
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import orjson

from llmops.child import child_command
from llmops.slices import Slices, share_cpu
from llmops.tracing.otlp import DOWN_S, OtlpTraceSink, QueuedSink

if TYPE_CHECKING:
    from llmops.settings import TraceSettings

log = logging.getLogger("llmops.tracing")
CHILD_SETTINGS = "LLMOPS_TRACE_CHILD"
STOP_S = 5.0  # after its flush, how long a closing child may take to exit before it is killed
FRAME_RECORDS = 32  # records per frame, one pipe write each
_COUNTS = ("traced", "errors", "dropped")


class ProcessTraceSink(QueuedSink):
    """A request-log sink that exports traces over OTLP from a child process."""

    def __init__(self, settings: TraceSettings) -> None:
        super().__init__(settings)
        # not yet written, by frame: how many records, and they or (already built) their frame
        self._frames: deque[tuple[int, list[dict[str, Any]] | bytes]] = deque()
        self._waiting = 0  # records in `_frames`
        self._unanswered: deque[int] = deque()  # records per frame written, not yet answered
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._down_until = 0.0

    # --- on the event loop ----------------------------------------------------------------
    def _backlog(self) -> int:
        return self._waiting

    def take_lines(self, records: list[dict[str, Any]] | None, lines: list[bytes]) -> None:
        """Queue a batch with the request log's JSON of each record (`LineSink`): its frames
        are joined from those lines, not serialised again. Never blocks, never raises."""
        self._accept(records, lines)

    def _enqueue(self, records: list[dict[str, Any]] | None, lines: list[bytes] | None) -> None:
        """Appends and joins only: records without lines are serialised by the writer task,
        in the loop's slices."""
        count = len(lines) if lines is not None else len(records or ())
        if time.monotonic() < self._down_until:  # the child failed a moment ago
            self._settle(errors=count)
            return
        for start in range(0, count, FRAME_RECORDS):
            end = min(start + FRAME_RECORDS, count)
            if lines is not None:
                self._frames.append((end - start, _framed(lines[start:end])))
            elif records is not None:
                self._frames.append((end - start, records[start:end]))
        self._waiting += count
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._write())  # on the loop `_accept` runs on

    def _rebind(self) -> None:
        self._pump, self._reader, self._process = None, None, None

    async def aclose(self, within_s: float | None = None) -> None:
        """Flush (at most `within_s`), then stop the child; what it has not answered by then
        is dropped and counted."""
        try:
            done = await self.aflush(within_s)
        finally:
            self._closed = True
            left = self._waiting
            self._frames.clear()
            self._waiting = 0
            if self._pump is not None and not self._pump.done():
                self._pump.cancel()
                await asyncio.gather(self._pump, return_exceptions=True)
            await self._stop_child()
            left += sum(self._unanswered)
            self._unanswered.clear()
            if left:
                self._settle(dropped=left)
        if not done or left:
            log.warning("the trace exporter had not sent every trace at shutdown: %d dropped", left)
        if self.stats["errors"]:
            log.info("MLflow tracing: %s", self.stats)

    # --- the child --------------------------------------------------------------------------
    async def _write(self) -> None:
        """Write the waiting frames to the child, starting it when needed."""
        slices = Slices()
        while self._frames:
            count, pending = self._frames[0]  # taken once written: `aclose` counts it until then
            try:
                frame = pending if isinstance(pending, bytes) else await _frame(pending, slices)
            except Exception as exc:  # records the request log could serialise: not expected
                self._frames.popleft()
                self._waiting -= count
                self._log_once("frame", "could not serialise a trace frame: %r", exc)
                self._settle(errors=count)
                continue
            # the child may have exited while the frame was built: look at it only now, and
            # record the frame as unanswered with no await in between
            process = self._process
            if process is None or process.returncode is not None:
                process = await self._start()
                if process is None:
                    lost = self._waiting
                    self._frames.clear()
                    self._waiting = 0
                    self._settle(errors=lost)
                    return
            self._frames.popleft()
            self._waiting -= count
            self._unanswered.append(count)
            assert process.stdin is not None
            try:
                process.stdin.write(frame)
                await process.stdin.drain()
            except (ConnectionError, OSError):
                pass  # the child is gone: the reader counts what it did not answer

    async def _start(self) -> asyncio.subprocess.Process | None:
        config = {**asdict(self.settings), "appinsights_connection_string": None}
        argv, env = child_command("llmops.tracing.exporter", CHILD_SETTINGS, config)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            self._down_until = time.monotonic() + DOWN_S
            self._log_once("start", "could not start the trace exporter process: %s", exc)
            return None
        self._process = process
        assert self._loop is not None
        self._reader = self._loop.create_task(self._read(process))
        return process

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        """Settle each frame as the child answers it; when it exits, count the rest."""
        assert process.stdout is not None
        try:
            while line := await process.stdout.readline():
                answer = orjson.loads(line)
                for _ in range(int(answer["frames"])):
                    self._unanswered.popleft()
                self._settle(
                    traced=int(answer["traced"]),
                    errors=int(answer["errors"]),
                    dropped=int(answer["dropped"]),
                )
        except Exception as exc:  # a garbled answer: treat the child as gone
            self._log_once("answer", "the trace exporter answered %r", exc)
        await process.wait()
        lost = sum(self._unanswered)
        self._unanswered.clear()
        if self._process is process:
            self._process = None
        if lost and not self._closed:
            self._down_until = time.monotonic() + DOWN_S
            self._log_once(
                "exit",
                "the trace exporter process exited (status %s): %d traces lost; it starts "
                "again with the next batch. Calls are not affected.",
                process.returncode,
                lost,
            )
        if lost:
            self._settle(errors=lost)

    async def _stop_child(self) -> None:
        process = self._process
        if process is None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()  # the child flushes, answers and exits
        try:
            async with asyncio.timeout(self.settings.flush_timeout_s + STOP_S):
                if self._reader is not None:
                    await asyncio.shield(self._reader)
        except TimeoutError:
            process.kill()
            await process.wait()
        self._process = None


async def _frame(records: list[dict[str, Any]], slices: Slices) -> bytes:
    """One frame (length, then a JSON array), serialised a record at a time in slices of the
    loop's time (llmops/slices.py), so calls are served between them."""
    parts = []
    for record in records:
        parts.append(orjson.dumps(record))
        await slices.turn()
    return _framed(parts)


def _framed(parts: list[bytes]) -> bytes:
    """The frame of records already serialised (a JSON value each; a trailing newline, as in
    the request log's lines, is whitespace between the array's items)."""
    body = b"[" + b",".join(parts) + b"]"
    return len(body).to_bytes(4, "big") + body


# --- the child process -----------------------------------------------------------------------
async def _serve(settings: TraceSettings) -> None:
    """Read frames into one OTLP sink as they come (so its POSTs gather many frames); answer
    the frames in order, as soon as the sink has settled their records."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    sink = OtlpTraceSink(settings)
    received = asyncio.Event()
    frames = 0  # read and handed to the sink, not yet answered
    ended = False

    async def answer() -> None:
        nonlocal frames
        last = {key: 0 for key in _COUNTS}
        while frames or not ended:
            if not frames:
                received.clear()
                await received.wait()
                continue
            covered = frames  # aflush waits for every record queued before it
            await sink.aflush(3600.0)
            frames -= covered
            now = {key: sink.stats[key] for key in _COUNTS}
            delta = {key: now[key] - last[key] for key in _COUNTS}
            last = now
            sys.stdout.buffer.write(orjson.dumps({"frames": covered, **delta}) + b"\n")
            sys.stdout.buffer.flush()

    answering = loop.create_task(answer())
    try:
        while True:
            try:
                head = await reader.readexactly(4)
                records = orjson.loads(await reader.readexactly(int.from_bytes(head, "big")))
            except asyncio.IncompleteReadError:
                break  # stdin closed: the gateway is stopping
            sink(records)
            frames += 1
            received.set()
    finally:
        ended = True
        received.set()
        await answering
        await sink.aclose(settings.flush_timeout_s)


def main() -> None:
    from llmops.settings import TraceSettings

    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s trace exporter %(name)s: %(message)s"
    )
    config = json.loads(os.environ[CHILD_SETTINGS])
    share_cpu()  # this process's slices give way to the gateway's process, not only its loop
    asyncio.run(_serve(TraceSettings(**config)))


if __name__ == "__main__":
    main()
