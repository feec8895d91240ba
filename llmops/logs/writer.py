"""The request-log writer: records leave the request path at once and reach the store in
batches, or a local spool when the store is down, from which they are replayed.

Guarantee (docs/request-log.md): every call whose handler finished is written exactly once,
provided the process stops gracefully (`aclose`) or, under the Functions host, the call's
invocation ran its end-of-call flush, and the spool's disk survives until the store is back.
Exactly once holds because each batch's blob name (`<instance>-<seq>`) is fixed before the
first attempt: a retry, a timed-out upload that did land, or a replay from the spool all
overwrite the same blob. `add()` never blocks, never raises and never waits for I/O.

Each call's record is built and serialised at the loop's next turn after `add()`, when its
response has gone out: by default in a child process (llmops/logs/builder.py,
`LLMOPS_LOG_PROCESS`), which sends the JSON lines back, else on the event loop in a callback
of its own (~0.04 ms here; a background thread would hold the GIL the loop needs), so a call
waits behind at most one other call's record, never behind a batch. A flush waits for the
lines of the calls added before it, joins them and uploads them; what it builds or frees
itself goes in slices that yield to the loop (llmops/slices.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import orjson

from llmops.logs.layout import batch_name
from llmops.logs.record import build_record, minimal_record
from llmops.logs.store import LogStore
from llmops.settings import LogSettings
from llmops.slices import Slices, release

if TYPE_CHECKING:
    from llmops.gateway.service import CallInfo
    from llmops.logs.builder import ProcessBuilder
    from llmops.redact import Redactor

log = logging.getLogger("llmops.logs")
RecordSink = Callable[[list[dict[str, Any]]], None]  # receives each batch's built records


@runtime_checkable
class LineSink(Protocol):
    """A sink that can take each record's JSON as the log wrote it (one line, ending in a
    newline), so that it need not serialise the record again (the trace exporter process)."""

    def take_lines(self, records: list[dict[str, Any]] | None, lines: list[bytes]) -> None: ...


class _Hour:
    """One hour's lines waiting for a flush: single lines (built here) or runs of lines (from
    the builder process), and how many lines in all."""

    __slots__ = ("parts", "records")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.records = 0


class Blob(NamedTuple):
    """One batch's JSON Lines for one hour, under the name it keeps until it is stored."""

    name: str
    data: bytes
    records: int  # lines in `data` (counting them again is ~0.2 ms per 500 on the loop)


# Only files this writer could have made are replayed (the spool folder may be shared).
_SPOOL_NAME = re.compile(r"v1~date=\d{4}-\d\d-\d\d~hour=\d\d~[A-Za-z0-9-]+-\d{10}\.jsonl")


def instance_id() -> str:
    """This process's name in blob names: host (or Functions instance), pid, boot nonce."""
    host = os.environ.get("WEBSITE_INSTANCE_ID", "")[:12] or socket.gethostname()
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in host)[:40] or "host"
    return f"{host}-{os.getpid()}-{random.getrandbits(24):06x}"


class RequestLogWriter:
    """Buffers finished calls and writes them as JSON Lines batches."""

    def __init__(
        self,
        settings: LogSettings,
        store: LogStore,
        redactor: Redactor,
        *,
        instance: str | None = None,
        sinks: Sequence[RecordSink] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.redactor = redactor
        self.instance = instance or instance_id()
        self.sinks = list(sinks)
        self._failed_sinks: set[str] = set()
        self.spool = Path(settings.spool_dir) / settings.container
        self.stats = {
            "added": 0,
            "written": 0,
            "spooled": 0,
            "replayed": 0,
            "spilled": 0,
            "upload_failures": 0,
            "build_failures": 0,
        }
        self._calls: deque[CallInfo] = deque()  # added, record not built yet
        self._hours: dict[str, _Hour] = {}  # built lines waiting for a flush, by hour
        # for the sinks, at the flush: the lines, and the records of those built here
        self._for_sinks: tuple[list[dict[str, Any]], list[bytes]] = ([], [])
        self._unsent: list[Blob] = []  # neither uploaded nor spooled (disk full)
        self._sequence = 0
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._down_until = 0.0
        self._clock = clock
        self._outage_logged = False
        self._spool_pending = self.spool.is_dir() and any(self.spool.glob("*.jsonl"))
        self._builder: ProcessBuilder | None = None
        if settings.process:
            from llmops.logs.builder import ProcessBuilder

            self._builder = ProcessBuilder(
                redactor,
                content=settings.content,
                instance=self.instance,
                place=self._place,
                build_here=self._queue,
                stats=self.stats,
            )

    @property
    def _lines(self) -> int:
        """Built lines waiting for a flush (`_hours` holds one or two hours)."""
        return sum(hour.records for hour in self._hours.values())

    def _pending(self) -> int:
        """Calls added and not yet flushed: to build, with the builder process, or built."""
        building = self._builder.pending() if self._builder is not None else 0
        return len(self._calls) + building + self._lines

    def backlog(self) -> int:
        """Records not yet in the store: buffered, or spooled by this process and not yet
        replayed (a spool left by an earlier process is not counted)."""
        spooled = max(self.stats["spooled"] - self.stats["replayed"], 0)
        return self._pending() + spooled

    # --- the request path ----------------------------------------------------------------
    def add(self, info: CallInfo) -> None:
        """Queue one finished call. O(1): its record is built at the loop's next turn (by
        then the call's response has gone out), here or in the builder process, and written
        with its batch later."""
        self.stats["added"] += 1
        loop = asyncio.get_running_loop()
        if self._builder is not None:
            self._builder.submit(info)
        else:
            self._calls.append(info)
            loop.call_soon(self._build_next)
        pending = self._pending()
        if pending >= self.settings.buffer_records:
            # The store is too slow to keep up: spill the buffer to disk instead of growing.
            self._spill_now()
        elif pending >= self.settings.batch_records:
            self._kick()
        elif self._timer is None:
            self._timer = loop.call_later(self.settings.flush_s, self._kick)

    def _queue(self, info: CallInfo) -> None:
        """Build a call's record here, at a turn of its own (the builder process's calls when
        it is down, thousands may come back at once, or while it is too far behind)."""
        self._calls.append(info)
        asyncio.get_running_loop().call_soon(self._build_next)

    def _build_next(self) -> None:
        if self._calls:  # a flush or a spill may have built it already
            self._take(self._calls.popleft())

    def _take(self, info: CallInfo) -> None:
        """Build one call's record and JSON line; the line waits in the buffer for its batch,
        and so does the record if there are sinks (they get each batch at once: the trace
        exporter then sends one POST per batch, not one per few records)."""
        record = self._record(info)
        try:
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except (TypeError, orjson.JSONEncodeError):  # e.g. nested past orjson's limit
            self.stats["build_failures"] += 1
            record = self._minimal(info, "RecordNotSerialisable")
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        key = record["received_at"][:13]
        hour = self._hours.get(key) or self._hours.setdefault(key, _Hour())
        hour.parts.append(line)
        hour.records += 1
        if self.sinks:
            records, lines = self._for_sinks
            records.append(record)
            lines.append(line)

    def _place(self, key: str, lines: bytes, count: int) -> None:
        """Lines the builder process sent back: `count` records of hour `key`."""
        hour = self._hours.get(key) or self._hours.setdefault(key, _Hour())
        hour.parts.append(lines)
        hour.records += count
        if self.sinks:
            self._for_sinks[1].extend(lines.splitlines(keepends=True))

    def _kick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # a no-op when the timer itself called us
            self._timer = None
        if not self._lock.locked():
            self._start(self.flush())

    def _start(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- flushing ----------------------------------------------------------------------------
    async def flush(self) -> None:
        """Write everything added so far to the store, or to the spool if the store fails."""
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._builder is not None:
                await self._builder.settle()  # the lines of the calls added so far
            slices = Slices()
            for _ in range(len(self._calls)):  # calls added since the loop's last turn
                if self._calls:
                    self._take(self._calls.popleft())
                    await slices.turn()
            batch, self._for_sinks = self._for_sinks, ([], [])
            hours, self._hours = self._hours, {}  # the same calls as `batch`
            freed = self._notify(batch, await self._parsed(batch, slices))
            blobs, self._unsent = self._unsent, []
            blobs += await self._blobs(hours, slices)
            for items in freed:
                await release(items, slices)
            try:
                if self._spool_pending and self._store_available():
                    await self._replay()
                for index, blob in enumerate(blobs):
                    if not await self._deliver(blob):
                        self._unsent.extend(blobs[index:])  # this one too: it is nowhere
                        break
            except Exception:  # never lose what was taken out of the buffer
                log.exception("request-log flush failed; keeping the batch for the next flush")
                self._unsent.extend(blobs)
        pending = self._pending()
        if pending >= self.settings.batch_records:
            self._kick()  # a full batch arrived while this one was written: no waiting
        elif pending and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.settings.flush_s, self._kick)

    async def aclose(self) -> None:
        """Flush what is buffered (graceful shutdown), then release the store."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._builder is not None:
            await self._builder.aclose()  # its calls' lines placed, the child stopped
        await self.flush()
        if self._unsent:
            log.error("%d request-log batches could not be written or spooled", len(self._unsent))
        await self.store.aclose()

    def _spill_now(self) -> None:
        """Move everything buffered to the spool, in a task: the lines built so far and the
        calls not yet built (built here: only those added since the loop's last turn)."""
        while self._calls:
            self._take(self._calls.popleft())
        batch, self._for_sinks = self._for_sinks, ([], [])
        freed = self._notify(batch)  # the lines it needs parsed at once: an emergency path
        self.stats["spilled"] += self._lines
        hours, self._hours = self._hours, {}
        self._start(self._spill(hours, freed))

    async def _spill(self, hours: dict[str, _Hour], freed: list[list[Any]]) -> None:
        slices = Slices()
        blobs = await self._blobs(hours, slices)
        for items in freed:
            await release(items, slices)
        for blob in blobs:
            if not await self._to_spool(blob):
                self._unsent.append(blob)

    async def _blobs(self, hours: dict[str, _Hour], slices: Slices) -> list[Blob]:
        """One blob per hour of `received_at`, under its final name. The lines are then freed
        a slice at a time: all at once, 500 take ~0.6 ms of the loop (llmops.slices.release)."""
        blobs = []
        for key, hour in hours.items():  # key is "YYYY-MM-DDTHH"
            self._sequence += 1
            name = batch_name(key, self.instance, self._sequence)
            blobs.append(Blob(name, b"".join(hour.parts), hour.records))
        for hour in hours.values():
            await release(hour.parts, slices)
        return blobs

    async def _parsed(
        self, batch: tuple[list[dict[str, Any]], list[bytes]], slices: Slices
    ) -> list[dict[str, Any]] | None:
        """The batch's records parsed from its lines, a slice at a time, when a sink needs
        records and some lines came from the builder process (metrics with Application
        Insights, in-process traces): ~8.5 us a line here, ~4 ms of the loop for 500 at once."""
        records, lines = batch
        if len(records) == len(lines) or all(isinstance(s, LineSink) for s in self.sinks):
            return None
        parsed = []
        try:
            for line in lines:
                parsed.append(orjson.loads(line))
                await slices.turn()
        except orjson.JSONDecodeError:  # not expected: `_notify` tries again, sink by sink,
            return None  # and logs it; the batch itself is written as it is
        return parsed

    def _notify(
        self,
        batch: tuple[list[dict[str, Any]], list[bytes]],
        parsed: list[dict[str, Any]] | None = None,
    ) -> list[list[Any]]:
        """Hand the batch's (redacted) records to the sinks: traces, metrics; a `LineSink`
        also gets their JSON lines (and no records when the builder process made them: it
        parses what it needs). The others get `parsed` then, or the lines parsed here. A sink
        must not block the loop (offload slow work itself), nor keep the lists (copy what it
        keeps); its failures are logged, never raised. Returns the lists, for the caller to
        free in slices (500 records at once: ~0.8 ms of the loop)."""
        records, lines = batch
        if not lines:
            return []
        built: list[dict[str, Any]] | None = records if len(records) == len(lines) else None
        for sink in self.sinks:
            try:
                if isinstance(sink, LineSink):
                    sink.take_lines(built, lines)
                elif built is not None:
                    sink(built)
                else:
                    if parsed is None:  # some lines came from the builder process
                        parsed = [orjson.loads(line) for line in lines]
                    sink(parsed)
            except Exception:
                name = getattr(sink, "__qualname__", type(sink).__name__)
                if name not in self._failed_sinks:
                    self._failed_sinks.add(name)
                    log.exception("request-log sink %s failed (logged once)", name)
        return [records, lines, parsed or []]

    def _record(self, info: CallInfo) -> dict[str, Any]:
        try:
            return build_record(
                info, self.redactor, content=self.settings.content, instance=self.instance
            )
        except Exception as exc:  # a bug here must cost the detail, never the record
            self.stats["build_failures"] += 1
            log.exception("could not build the request-log record of %s", info.request_id)
            return self._minimal(info, type(exc).__name__)

    def _minimal(self, info: CallInfo, reason: str) -> dict[str, Any]:
        return minimal_record(info, reason, self.instance)

    def _store_available(self) -> bool:
        return self._clock() >= self._down_until

    async def _deliver(self, blob: Blob) -> bool:
        """Upload, or spool when the store is down. False only if both failed."""
        if self._store_available():
            try:
                await asyncio.wait_for(
                    self.store.put(blob.name, blob.data), self.settings.upload_timeout_s
                )
            except Exception as exc:
                self.stats["upload_failures"] += 1
                self._down_until = self._clock() + self.settings.retry_s
                if not self._outage_logged:
                    log.warning(
                        "request-log store %s failed (%s: %s); spooling to %s",
                        self.store.description,
                        type(exc).__name__,
                        exc,
                        self.spool,
                    )
                    self._outage_logged = True
            else:
                self.stats["written"] += blob.records
                return True
        return await self._to_spool(blob)

    async def _to_spool(self, blob: Blob) -> bool:
        try:
            await asyncio.to_thread(_spool_write, self.spool, blob.name, blob.data)
        except OSError:
            log.exception("could not spool request-log batch %s", blob.name)
            return False
        self._spool_pending = True
        self.stats["spooled"] += blob.records
        return True

    async def _replay(self) -> None:
        """Upload spooled batches under their original names, oldest first, until the spool
        is empty (a spill may add files while a replay runs)."""
        while True:
            files = (
                sorted(path for path in self.spool.glob("*.jsonl") if _SPOOL_NAME.match(path.name))
                if self.spool.is_dir()
                else []
            )
            if not files:
                break
            for path in files:
                data = path.read_bytes()
                try:
                    await asyncio.wait_for(
                        self.store.put(_spool_to_name(path.name), data),
                        self.settings.upload_timeout_s,
                    )
                except Exception:
                    self._down_until = self._clock() + self.settings.retry_s
                    return
                path.unlink(missing_ok=True)
                self.stats["replayed"] += data.count(b"\n")
        self._spool_pending = False
        if self._outage_logged:
            log.warning("request-log store %s is back; spool replayed", self.store.description)
            self._outage_logged = False


def _spool_write(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _name_to_spool(name)
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


# Spool file names keep the blob name (date, hour, instance, sequence) so that sorting the
# files replays oldest first and a replay lands under the very name the upload would have.
def _name_to_spool(name: str) -> str:
    return name.replace("/", "~")


def _spool_to_name(filename: str) -> str:
    return filename.replace("~", "/")
