"""The timer's NCRONTAB schedule, and the windows it cuts time into.

Azure Functions timers use six-field NCRONTAB expressions, `second minute hour day month
day-of-week` (e.g. `0 0 * * * *`, hourly). Each field is `*`, a number, a range `a-b`, a step
`*/n` or `a-b/n`, or a comma-separated list of those; day-of-week runs 0-6 from Sunday (7 is
Sunday too) and also takes `SUN`..`SAT`; months take `JAN`..`DEC`. Unlike classic cron, and
as the NCrontab library behind Azure timers does, a day runs only when it matches BOTH the
day-of-month and the day-of-week fields (`0 0 0 13 * FRI`: only on Friday the 13th).

The drift monitor's current window is the span between two consecutive occurrences: the run
at 14:00 of an hourly schedule analyses `[13:00, 14:00)`. A window is named by its bounds, so
a rerun of the same window writes the same report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_DAY_NAMES = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_MONTH_NAMES = {
    name: i + 1
    for i, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day", 1, 31, {}),
    ("month", 1, 12, _MONTH_NAMES),
    ("day-of-week", 0, 7, _DAY_NAMES),
)
_LOOKBACK_DAYS = 366 * 5  # a schedule with no occurrence in five years is refused


class ScheduleError(ValueError):
    """The expression is not a six-field NCRONTAB schedule this module understands."""


@dataclass(frozen=True)
class Window:
    """A half-open span of time `[start, end)`, in UTC."""

    start: datetime
    end: datetime

    @property
    def id(self) -> str:
        """A name fit for a blob path that sorts by time: `20261122T1300Z-20261122T1400Z`."""
        return f"{_compact(self.start)}-{_compact(self.end)}"

    def describe(self) -> dict[str, str]:
        """The window as JSON-ready ISO strings."""
        return {"start": _iso(self.start), "end": _iso(self.end)}


@dataclass(frozen=True)
class Schedule:
    """A parsed NCRONTAB expression."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Monday, as `datetime.weekday()`

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        """Parse a six-field NCRONTAB expression; raise `ScheduleError` naming the bad field."""
        parts = expression.split()
        if len(parts) != 6:
            raise ScheduleError(
                f"expected six fields 'second minute hour day month day-of-week', got {len(parts)}"
            )
        values = [
            _field(part, name, low, high, names)
            for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)
        ]
        sunday_first = {(d % 7) for d in values[5]}
        return cls(
            expression=" ".join(parts),
            seconds=tuple(sorted(values[0])),
            minutes=tuple(sorted(values[1])),
            hours=tuple(sorted(values[2])),
            days=frozenset(values[3]),
            months=frozenset(values[4]),
            weekdays=frozenset((d - 1) % 7 for d in sunday_first),
        )

    def _runs_on(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        return day.day in self.days and day.weekday() in self.weekdays

    def _times_of(self, day: datetime, *, reverse: bool) -> Iterator[datetime]:
        hours = reversed(self.hours) if reverse else self.hours
        for hour in hours:
            minutes = reversed(self.minutes) if reverse else self.minutes
            for minute in minutes:
                seconds = reversed(self.seconds) if reverse else self.seconds
                for second in seconds:
                    yield day.replace(hour=hour, minute=minute, second=second)

    def previous(self, moment: datetime) -> datetime:
        """The latest occurrence at or before `moment`."""
        moment = moment.astimezone(UTC).replace(microsecond=0)
        day = moment.replace(hour=0, minute=0, second=0)
        for _ in range(_LOOKBACK_DAYS):
            if self._runs_on(day):
                for occurrence in self._times_of(day, reverse=True):
                    if occurrence <= moment:
                        return occurrence
            day -= timedelta(days=1)
        raise ScheduleError(f"{self.expression!r} has no occurrence in the last five years")

    def next_after(self, moment: datetime) -> datetime:
        """The earliest occurrence strictly after `moment`."""
        moment = moment.astimezone(UTC)
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        for _ in range(_LOOKBACK_DAYS):
            if self._runs_on(day):
                for occurrence in self._times_of(day, reverse=False):
                    if occurrence > moment:
                        return occurrence
            day += timedelta(days=1)
        raise ScheduleError(f"{self.expression!r} has no occurrence in the next five years")

    def window_ending(self, end: datetime) -> Window:
        """The window that closes at the occurrence `end`: from the occurrence before it."""
        return Window(self.previous(end - timedelta(seconds=1)), end)

    def due_windows(self, now: datetime, *, last_run: datetime | None, limit: int) -> list[Window]:
        """The windows a run at `now` analyses, oldest first.

        Normally the one window that closed at the latest occurrence. When the run is past
        due and the host tells when the schedule last ran, every window that closed since
        then too, at most `limit` of them (the most recent ones).
        """
        end = self.previous(now)
        windows = [self.window_ending(end)]
        while last_run is not None and len(windows) < limit:
            earlier = windows[0].start
            if earlier <= last_run.astimezone(UTC):
                break
            windows.insert(0, self.window_ending(earlier))
        return windows


def _field(part: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    values: set[int] = set()
    for item in part.split(","):
        body, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body in ("*", "?"):
                first, last = low, high
            elif "-" in body:
                first_text, last_text = body.split("-", 1)
                first, last = _value(first_text, names), _value(last_text, names)
            else:
                first = _value(body, names)
                last = high if step_text else first
        except ValueError:
            raise ScheduleError(f"{name} field {part!r} is not understood") from None
        if step < 1 or not low <= first <= last <= high:
            raise ScheduleError(f"{name} field {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


def _value(text: str, names: dict[str, int]) -> int:
    upper = text.strip().upper()
    return names[upper] if upper in names else int(upper)


def _compact(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y%m%dT%H%M%SZ" if moment.second else "%Y%m%dT%H%MZ")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
