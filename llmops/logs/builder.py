"""Request-log records built in a child process, so the gateway's event loop only hands calls over.

Building a record (parsing the answer, estimating usage, redacting, serialising) is ~124,000
instructions per small chat call here, ~18% of what the gateway spends on the call itself
(bench/instructions.py); at concurrency 64 it was most of what the request log cost the loop
(docs/benchmarks.md, session 10). With `LLMOPS_LOG_PROCESS=on` (the default) the writer hands
each call to a child (`python -m llmops.logs.builder`): at the loop's next turn the call is
encoded as a flat JSON array (~12,000 instructions), and frames of up to `FRAME_CALLS` calls
go to the child when full or `LINGER_S` after their first call (a flush sends at once), so
that at low traffic the child is not woken for every call. The child sends the JSON lines
back, grouped by hour. Everything else (the buffer, batches, uploads, the spool, the sinks)
stays in the writer, in the gateway's process.

Protocol: frames of a 4-byte big-endian length and a body, both ways. The parent sends a JSON
array of calls (`encode`). The child answers every frame, in order, with a body of a 4-byte
header length, a JSON header `{"calls": n, "failures": f, "groups": [[hour, lines, bytes],
...]}` and the lines of each group, one after the other. Closing stdin stops the child.

Failures cost no record. The parent keeps each call until its line is back. While the child
has `MAX_UNANSWERED` calls unanswered, further frames are built in the gateway's process.
When the child cannot start, exits, answers garbage, falls `SETTLE_S` seconds behind a flush
or answers nothing for `SETTLE_S` while `MAX_UNANSWERED` behind, it is stopped, and once its
output has ended the calls it did not answer are built in the gateway's process as without a
child (so never twice); it is started again no sooner than `DOWN_S` seconds later. A call
the child cannot encode (a body orjson refuses) is built in the gateway's process too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from llmops.child import child_command
from llmops.logs.record import build_record, minimal_record
from llmops.slices import cpu_offers

if TYPE_CHECKING:
    from llmops.gateway.service import CallInfo
    from llmops.redact import Redactor

log = logging.getLogger("llmops.logs")
BUILDER_SETTINGS = "LLMOPS_LOG_BUILDER"
DOWN_S = 30.0  # after the child failed, calls are built in the gateway's process this long
SETTLE_S = 5.0  # a flush waits this long for the child's answers before building them here
FRAME_CALLS = 64  # calls per frame, at most: one pipe write, one wake-up of the child each
LINGER_S = 0.05  # and a frame waits this long for more calls (a flush sends it at once)
MAX_UNANSWERED = 5_000  # calls sent and not answered: beyond, further frames are built here
REAP_S, REAP_TRIES = 0.05, 100  # a killed child's exit status is collected within 5 s
STOP_S = 5.0  # a closing child may take this long to answer and exit before it is killed

Place = Callable[[str, bytes, int], None]  # hour ("YYYY-MM-DDTHH"), lines, how many


def encode(info: CallInfo) -> list[Any]:
    """A call as the child reads it: its fields in order (`decode` is the inverse)."""
    chunks = info.chunks
    return [
        info.request_id,
        info.route,
        info.trace_id,
        info.parent_span_id,
        info.consumer,
        info.received_at,
        info.started,
        info.model,
        info.stream,
        info.deployment,
        info.upstream,
        [(a.deployment, a.status, a.error, a.waited_s) for a in info.attempts],
        info.request_body,
        info.status,
        info.error,
        # strict: an answer that is not UTF-8 raises, and its call is built in the gateway,
        # where the record reads the raw bytes (a replaced character could make it parse)
        info.response_body.decode() if info.response_body else "",
        b"".join(chunks).decode() if chunks else "",
        info.first_byte,
        info.done,
        info.registry,
    ]


def decode(fields: list[Any]) -> CallInfo:
    """The call `encode` made `fields` of."""
    from llmops.gateway.service import Attempt, CallInfo

    (request_id, route, trace_id, parent, consumer, received_at, started, model, stream) = fields[
        :9
    ]
    deployment, upstream, attempts, body, status, error, answer, streamed = fields[9:17]
    first_byte, done, registry = fields[17:20]
    return CallInfo(
        request_id=request_id,
        route=route,
        trace_id=trace_id,
        parent_span_id=parent,
        consumer=consumer,
        received_at=received_at,
        started=started,
        model=model,
        stream=stream,
        deployment=deployment,
        upstream=upstream,
        attempts=[Attempt(*attempt) for attempt in attempts],
        request_body=body,
        status=status,
        error=error,
        response_body=answer.encode(),
        chunks=[streamed.encode()] if streamed else [],
        first_byte=first_byte,
        done=done,
        registry=registry,
    )


def build_lines(
    calls: list[list[Any]],
    redactor: Redactor,
    *,
    content: bool,
    instance: str,
    between: Callable[[], None] | None = None,
) -> bytes:
    """The answer to one frame of calls (see the module docstring); `between` runs before
    each record (the child offers the CPU there)."""
    groups: dict[str, list[bytes]] = {}
    failures = 0
    for fields in calls:
        if between is not None:
            between()
        try:
            info = decode(fields)
        except Exception:  # a frame this version did not write: not expected
            failures += 1
            record = _undecodable(fields, instance)
        else:
            try:
                record = build_record(info, redactor, content=content, instance=instance)
                line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
            except Exception as exc:
                failures += 1
                record = minimal_record(info, type(exc).__name__, instance)
            else:
                groups.setdefault(record["received_at"][:13], []).append(line)
                continue
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        groups.setdefault(record["received_at"][:13], []).append(line)
    parts = [b"".join(lines) for lines in groups.values()]
    header = orjson.dumps(
        {
            "calls": len(calls),
            "failures": failures,
            "groups": [
                [hour, len(lines), len(part)]
                for (hour, lines), part in zip(groups.items(), parts, strict=True)
            ],
        }
    )
    body = len(header).to_bytes(4, "big") + header + b"".join(parts)
    return len(body).to_bytes(4, "big") + body


def _undecodable(fields: Any, instance: str) -> dict[str, Any]:
    from llmops.gateway.service import CallInfo

    request_id = fields[0] if isinstance(fields, list) and fields else "unknown"
    received = fields[5] if isinstance(fields, list) and len(fields) > 5 else time.time()
    info = CallInfo(request_id=str(request_id), route="", trace_id="")
    if isinstance(received, int | float):
        info.received_at = float(received)
    return minimal_record(info, "CallNotDecodable", instance)


class _Child:
    """A running builder: its process and the two ends of its pipes on the event loop."""

    def __init__(self, process: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.loop = loop
        self.stdin = process.stdin.fileno()
        self.stdout = process.stdout.fileno()
        os.set_blocking(self.stdin, False)
        os.set_blocking(self.stdout, False)
        self.unwritten: deque[memoryview] = deque()  # what the pipe did not take yet
        self.received = bytearray()  # read, not yet a whole frame
        self.ended = asyncio.Event()  # its output ended: it answers nothing more

    def stop(self) -> None:
        """Kill it and let go of its pipes (on a finished loop too)."""
        for remove, fd in (
            (self.loop.remove_reader, self.stdout),
            (self.loop.remove_writer, self.stdin),
        ):
            with contextlib.suppress(Exception):  # a closed loop
                remove(fd)
        _release(self.process)
        try:  # the loop that runs now: the child's own may have ended (`_bind`)
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = self.loop
        _reap(self.process, loop, REAP_TRIES)


def _reap(process: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop, tries: int) -> None:
    """Collect a killed child's exit status without blocking the loop (`poll`, every
    REAP_S): a child nobody waits for stays a zombie. On a closed loop, or after REAP_TRIES,
    `subprocess` reaps it at the next child's start."""
    if process.poll() is None and tries > 1:
        with contextlib.suppress(RuntimeError):  # a closed loop
            loop.call_later(REAP_S, _reap, process, loop, tries - 1)


def _release(process: subprocess.Popen[bytes]) -> None:
    """Kill `process` and close our ends of its pipes."""
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    for pipe in (process.stdin, process.stdout):
        with contextlib.suppress(OSError):
            if pipe is not None:
                pipe.close()


class ProcessBuilder:
    """The writer's side: hands calls to the child, places the lines it answers with.

    Everything runs in callbacks of the event loop (non-blocking pipes, `add_reader` and
    `add_writer`): no task of its own, so nothing to cancel when a loop ends (cancelling
    asyncio's own subprocess start hangs `asyncio.run` on Python 3.11)."""

    def __init__(
        self,
        redactor: Redactor,
        *,
        content: bool,
        instance: str,
        place: Place,
        build_here: Callable[[CallInfo], None],  # on the loop, at a turn of its own
        stats: dict[str, int],
    ) -> None:
        self._config = {
            "mode": redactor.mode,
            "salt": redactor.salt.hex(),
            "extra": dict(redactor.extra),
            "content": content,
            "instance": instance,
        }
        self._place = place
        self._build_here = build_here
        self._stats = stats
        # each call with its number in handing order, as it goes through the three stages
        self._outbox: deque[tuple[int, CallInfo]] = deque()  # handed over, not yet encoded
        self._framed: list[tuple[int, CallInfo]] = []  # encoded into `_frame`, not yet sent
        self._frame: list[bytes] = []
        self._linger: asyncio.TimerHandle | None = None
        self._sent: deque[tuple[int, CallInfo]] = deque()  # sent to the child, not answered
        self._child: _Child | None = None
        self._answered = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_until = 0.0
        self._logged: set[str] = set()
        self._closed = False
        self._handed = 0  # calls handed over so far
        self._progress = 0.0  # when the child last answered, or was sent calls when idle

    def pending(self) -> int:
        """Calls handed over whose lines are not back yet."""
        return len(self._outbox) + len(self._framed) + len(self._sent)

    # --- handing calls over -----------------------------------------------------------------
    def submit(self, info: CallInfo) -> None:
        """Hand one call over: encoded at the loop's next turn, sent with its frame. O(1)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        self._outbox.append((self._handed, info))
        self._handed += 1
        loop.call_soon(self._encode_next)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Work on `loop` from now on. A child started on another loop (a finished one: each
        test has its own) is stopped, and the calls it was sent are built here (none of its
        answers for them was placed, so none is built twice)."""
        old, self._loop = self._loop, loop
        self._answered = asyncio.Event()
        self._linger = None  # a timer of the old loop
        if old is not None and self._child is not None:
            child, self._child = self._child, None
            child.stop()
            self._reclaim()
        for _ in self._outbox:  # their turns were due on the old loop
            loop.call_soon(self._encode_next)
        if self._framed:
            loop.call_soon(self._send)

    def _encode_next(self) -> None:
        if self._outbox:  # a flush may have taken it already
            self._encode(*self._outbox.popleft())

    def _encode(self, number: int, info: CallInfo) -> None:
        """Add one call to the frame being gathered, which goes when it holds FRAME_CALLS
        calls or LINGER_S after its first (a flush sends it at once)."""
        try:
            self._frame.append(orjson.dumps(encode(info)))
        except Exception:  # a value orjson refuses, an answer not UTF-8: built here
            self._build_here(info)
            return
        self._framed.append((number, info))
        if len(self._framed) >= FRAME_CALLS:
            self._send()
        elif self._linger is None and self._loop is not None:
            self._linger = self._loop.call_later(LINGER_S, self._send)

    def _send(self) -> None:
        """Write the gathered frame to the child (started first when needed); while the
        child is down, or MAX_UNANSWERED calls behind, build its calls here."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        calls, parts = self._framed, self._frame
        if not calls:
            return
        self._framed, self._frame = [], []
        child = self._child or self._start()
        if child is not None and len(self._sent) >= MAX_UNANSWERED:
            self._behind()
            child = None  # this frame is built here
        if child is None:
            for _, info in calls:
                self._build_here(info)
            return
        body = b"[" + b",".join(parts) + b"]"
        if not self._sent:
            self._progress = time.monotonic()  # it has had nothing to answer until now
        self._sent.extend(calls)
        self._write(child, len(body).to_bytes(4, "big") + body)

    def _behind(self) -> None:
        """The child has MAX_UNANSWERED calls unanswered: a burst faster than it builds
        (~16,000 records/s here), or a stall. One that answered within SETTLE_S keeps what it
        has, and the next frames are built here, so that the calls waiting on the child stay
        bounded; stopping a child that is only behind would hand all of its calls to the loop
        at once, and build every record here for DOWN_S. One that did not is stopped."""
        if time.monotonic() - self._progress > SETTLE_S:
            self._fail("stuck", "the request-log builder answered nothing in %.1f s", SETTLE_S)
        else:
            self._log_once(
                "behind",
                "the request-log builder is %d calls behind: building records here meanwhile",
                len(self._sent),
            )

    def _oldest(self) -> int:
        """The number of the oldest call not yet placed nor handed back (the stages are in
        handing order: sent, then framed, then in the outbox)."""
        for stage in (self._sent, self._framed, self._outbox):
            if stage:
                return stage[0][0]
        return self._handed

    async def settle(self, within_s: float = SETTLE_S) -> None:
        """Wait until every call handed over before this point has its line placed, or is
        handed back to be built here (calls handed over meanwhile are not waited for): what
        the child has not answered within `within_s`, or when it fails."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        target = self._handed
        deadline = time.monotonic() + within_s
        while self._outbox:
            self._encode(*self._outbox.popleft())
        self._send()
        while self._oldest() < target:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail("slow", "the request-log builder did not answer in %.1f s", within_s)
                break
            self._answered.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), left)

    async def aclose(self) -> None:
        """Settle, then stop the child: its stdin closed, it exits (killed after STOP_S)."""
        try:
            await self.settle()
        finally:
            self._closed = True
            child, self._child = self._child, None
            if child is not None:
                child.loop.remove_writer(child.stdin)
                with contextlib.suppress(OSError):
                    if child.process.stdin is not None:
                        child.process.stdin.close()  # the child's signal to exit
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.ended.wait(), STOP_S)
                child.stop()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(STOP_S)
            self._reclaim()

    # --- the child --------------------------------------------------------------------------
    def _start(self) -> _Child | None:
        if self._closed or time.monotonic() < self._down_until or self._loop is None:
            return None
        argv, env = child_command("llmops.logs.builder", BUILDER_SETTINGS, self._config)
        process = None
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            child = _Child(process, self._loop)
            self._loop.add_reader(child.stdout, self._readable, child)
        except Exception as exc:  # OSError mostly; anything else must not lose the frame
            if process is not None:
                _release(process)
            self._down_until = time.monotonic() + DOWN_S
            self._log_once("start", "could not start the request-log builder: %s", exc)
            return None
        self._child = child
        return child

    def _write(self, child: _Child, data: bytes) -> None:
        if child.unwritten:
            child.unwritten.append(memoryview(data))
            return
        try:
            written = os.write(child.stdin, data)
        except BlockingIOError:
            written = 0
        except OSError:  # the child is gone: its output ends, and its calls are built here
            return
        if written < len(data):
            child.unwritten.append(memoryview(data)[written:])
            child.loop.add_writer(child.stdin, self._writable, child)

    def _writable(self, child: _Child) -> None:
        while child.unwritten:
            chunk = child.unwritten[0]
            try:
                written = os.write(child.stdin, chunk)
            except BlockingIOError:
                return
            except OSError:
                child.unwritten.clear()
                break
            if written < len(chunk):
                child.unwritten[0] = chunk[written:]
                return
            child.unwritten.popleft()
        child.loop.remove_writer(child.stdin)

    def _readable(self, child: _Child) -> None:
        """Place each whole answer; at the end of the child's output, build here whatever it
        did not answer."""
        try:
            data = os.read(child.stdout, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            received = child.received
            received += data
            try:
                while len(received) >= 4:
                    size = int.from_bytes(received[:4], "big")
                    if len(received) < 4 + size:
                        break
                    body = bytes(received[4 : 4 + size])
                    del received[: 4 + size]
                    self._take(body)
            except Exception as exc:  # a garbled answer: stopped below, its calls kept
                self._log_once("answer", "the request-log builder answered %r", exc)
            else:
                return
        # its output ended (it exited, or was stopped), or it answered garbage: stop it and
        # let go of both pipes
        child.stop()
        child.ended.set()
        if self._child is child:
            self._child = None
            status = child.process.poll()
            if self._sent and not self._closed:
                self._down_until = time.monotonic() + DOWN_S
                self._log_once(
                    "exit",
                    "the request-log builder exited (status %s) with %d calls unanswered: "
                    "built in the gateway's process instead, and for %d s. No record is lost.",
                    status,
                    len(self._sent),
                    DOWN_S,
                )
            self._reclaim()

    def _reclaim(self) -> None:
        """Build here the calls a child that answers nothing more was sent."""
        while self._sent:
            self._build_here(self._sent.popleft()[1])
        self._answered.set()

    def _take(self, body: bytes) -> None:
        """Place one answer's lines: all of them or, when the answer does not add up, none
        (it raises, and the child's calls are built here)."""
        size = int.from_bytes(body[:4], "big")
        header = orjson.loads(body[4 : 4 + size])
        calls = int(header["calls"])
        start = 4 + size
        groups = []
        for hour, lines, length in header["groups"]:
            groups.append((str(hour), body[start : start + length], int(lines)))
            start += length
        if start != len(body) or sum(g[2] for g in groups) != calls or calls > len(self._sent):
            raise ValueError(f"an answer that does not add up ({calls} calls)")
        for hour, lines, count in groups:
            self._place(hour, lines, count)
        for _ in range(calls):
            self._sent.popleft()
        self._stats["build_failures"] += int(header["failures"])
        self._progress = time.monotonic()
        self._answered.set()

    def _fail(self, key: str, message: str, *args: object) -> None:
        """Stop the child and build here what it was sent; no new one for DOWN_S."""
        self._down_until = time.monotonic() + DOWN_S
        self._log_once(key, message, *args)
        child, self._child = self._child, None
        if child is not None:
            child.stop()
            child.ended.set()
        self._reclaim()

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args)


def main() -> None:
    from llmops.redact import Redactor

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway stops it by closing stdin
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s log builder: %(message)s")
    config = json.loads(os.environ[BUILDER_SETTINGS])
    redactor = Redactor(
        mode=config["mode"], salt=bytes.fromhex(config["salt"]), extra=config["extra"]
    )
    content, instance = bool(config["content"]), str(config["instance"])
    # A frame is up to 64 records (~4 ms of CPU here): offer the CPU every 0.3 ms of it, so
    # that a gateway woken on this CPU does not wait for the rest (llmops/slices.py).
    between = cpu_offers()
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = source.read(4)
        if len(head) < 4:
            return  # stdin closed: the gateway is stopping
        body = source.read(int.from_bytes(head, "big"))
        calls = orjson.loads(body)
        sink.write(
            build_lines(calls, redactor, content=content, instance=instance, between=between)
        )
        sink.flush()


if __name__ == "__main__":
    main()
