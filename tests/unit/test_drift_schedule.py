"""The drift timer's NCRONTAB schedule and the windows it cuts time into."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llmops.drift.schedule import Schedule, ScheduleError, Window

pytestmark = pytest.mark.unit

HOURLY = Schedule.parse("0 0 * * * *")


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, *, month: int = 11) -> datetime:
    """A moment in 2026 (November unless told), UTC. 2026-11-21 is a Saturday."""
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


# parsing


def test_six_fields_parse_into_sets() -> None:
    schedule = Schedule.parse("0 */15 2,14 1-5 * *")
    assert schedule.seconds == (0,)
    assert schedule.minutes == (0, 15, 30, 45)
    assert schedule.hours == (2, 14)
    assert schedule.days == frozenset({1, 2, 3, 4, 5})
    assert schedule.months == frozenset(range(1, 13))


def test_extra_spaces_are_normalised_in_the_expression() -> None:
    assert Schedule.parse("  0  0 *  * * * ").expression == "0 0 * * * *"


def test_steps_over_ranges_and_from_a_single_value() -> None:
    schedule = Schedule.parse("0 10-40/10 5/6 * * *")
    assert schedule.minutes == (10, 20, 30, 40)
    assert schedule.hours == (5, 11, 17, 23)  # `5/6`: from 5 to the end of the range


def test_lists_mix_values_ranges_and_steps() -> None:
    assert Schedule.parse("0 0,5-7,50-59/5 * * * *").minutes == (0, 5, 6, 7, 50, 55)


def test_day_and_month_names_case_insensitive() -> None:
    schedule = Schedule.parse("0 0 9 * jan,Jul-SEP MON-FRI")
    assert schedule.months == frozenset({1, 7, 8, 9})
    assert schedule.weekdays == frozenset({0, 1, 2, 3, 4})  # Monday..Friday as datetime.weekday()


@pytest.mark.parametrize("sunday", ["0", "7", "SUN", "sun"])
def test_sunday_is_0_7_or_sun(sunday: str) -> None:
    assert Schedule.parse(f"0 0 0 * * {sunday}").weekdays == frozenset({6})


def test_zero_to_seven_is_every_day_once() -> None:
    assert Schedule.parse("0 0 0 * * 0-7").weekdays == frozenset(range(7))


@pytest.mark.parametrize(
    ("expression", "count"),
    [("0 * * * *", 5), ("0 0 * * * * *", 7), ("", 0), ("* * *", 3)],
)
def test_anything_but_six_fields_is_refused(expression: str, count: int) -> None:
    with pytest.raises(ScheduleError, match=f"expected six fields.*got {count}$"):
        Schedule.parse(expression)


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("60 * * * * *", "second field '60'"),
        ("0 x * * * *", "minute field 'x'"),
        ("0 0 24 * * *", "hour field '24'"),
        ("0 0 0 0 * *", "day field '0'"),
        ("0 0 0 32 * *", "day field '32'"),
        ("0 0 0 * 13 *", "month field '13'"),
        ("0 0 0 * FOO *", "month field 'FOO'"),
        ("0 0 0 * * 8", "day-of-week field '8'"),
        ("0 0 0 * * MON-JAN", "day-of-week field 'MON-JAN'"),
        ("0 */0 * * * *", "minute field '[*]/0'"),
        ("0 */x * * * *", "minute field '[*]/x'"),
        ("0 30-10 * * * *", "minute field '30-10'"),
        ("0 0 1,,2 * * *", "hour field '1,,2'"),
        ("0 0 0 * JAN-DEC/a *", "month field 'JAN-DEC/a'"),
    ],
)
def test_errors_name_the_bad_field(expression: str, field: str) -> None:
    with pytest.raises(ScheduleError, match=field):
        Schedule.parse(expression)


def test_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)


# previous / next_after


def test_hourly_previous_is_at_or_before() -> None:
    assert HOURLY.previous(at(22, 14, 0, 5)) == at(22, 14)
    assert HOURLY.previous(at(22, 14)) == at(22, 14)  # an occurrence is its own previous
    assert HOURLY.previous(at(22, 13, 59, 59)) == at(22, 13)
    assert HOURLY.previous(at(22, 0, 30)) == at(22, 0)


def test_hourly_next_is_strictly_after() -> None:
    assert HOURLY.next_after(at(22, 14)) == at(22, 15)
    assert HOURLY.next_after(at(22, 14, 0, 5)) == at(22, 15)
    assert HOURLY.next_after(at(22, 23, 30)) == at(23, 0)


def test_microseconds_do_not_hide_an_occurrence() -> None:
    moment = at(22, 14).replace(microsecond=999_999)
    assert HOURLY.previous(moment) == at(22, 14)
    assert HOURLY.next_after(at(22, 13, 59, 59).replace(microsecond=1)) == at(22, 14)


def test_other_timezones_are_converted_to_utc() -> None:
    from datetime import timezone

    cet = timezone(timedelta(hours=1))
    moment = datetime(2026, 11, 22, 15, 30, tzinfo=cet)  # 14:30 UTC
    assert HOURLY.previous(moment) == at(22, 14)
    assert HOURLY.previous(moment).tzinfo == UTC


def test_every_fifteen_minutes() -> None:
    schedule = Schedule.parse("0 */15 * * * *")
    assert schedule.previous(at(22, 14, 44, 59)) == at(22, 14, 30)
    assert schedule.previous(at(22, 14, 45)) == at(22, 14, 45)
    assert schedule.next_after(at(22, 14, 45)) == at(22, 15, 0)
    assert schedule.next_after(at(22, 23, 50)) == at(23, 0, 0)


def test_daily_at_two_thirty() -> None:
    schedule = Schedule.parse("0 30 2 * * *")
    assert schedule.previous(at(22, 2, 29, 59)) == at(21, 2, 30)
    assert schedule.previous(at(22, 2, 30)) == at(22, 2, 30)
    assert schedule.previous(at(22, 23, 0)) == at(22, 2, 30)
    assert schedule.next_after(at(22, 2, 30)) == at(23, 2, 30)
    assert schedule.next_after(at(22, 1, 0)) == at(22, 2, 30)


def test_weekdays_only_skip_the_weekend() -> None:
    schedule = Schedule.parse("0 0 9 * * 1-5")
    assert at(21).weekday() == 5  # a Saturday
    assert schedule.previous(at(21, 12)) == at(20, 9)  # back to Friday
    assert schedule.previous(at(22, 12)) == at(20, 9)  # from Sunday too
    assert schedule.previous(at(23, 8, 59)) == at(20, 9)  # Monday before 09:00
    assert schedule.previous(at(23, 9)) == at(23, 9)
    assert schedule.next_after(at(20, 9)) == at(23, 9)  # Friday's run -> Monday's


def test_month_and_year_boundaries() -> None:
    assert HOURLY.previous(datetime(2026, 12, 1, 0, 10, tzinfo=UTC)) == datetime(
        2026, 12, 1, tzinfo=UTC
    )
    assert HOURLY.next_after(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    daily = Schedule.parse("0 0 0 * * *")
    assert daily.previous(datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC) - timedelta(seconds=1)) == (
        datetime(2026, 2, 28, tzinfo=UTC)
    )


def test_day_31_skips_short_months() -> None:
    monthly = Schedule.parse("0 0 0 31 * *")
    assert monthly.next_after(at(1, month=11)) == datetime(2026, 12, 31, tzinfo=UTC)
    assert monthly.previous(at(30, month=11)) == datetime(2026, 10, 31, tzinfo=UTC)


def test_leap_day_schedule() -> None:
    leap = Schedule.parse("0 0 12 29 FEB *")
    assert leap.next_after(at(1, month=1)) == datetime(2028, 2, 29, 12, tzinfo=UTC)
    assert leap.previous(at(1, month=1)) == datetime(2024, 2, 29, 12, tzinfo=UTC)


def test_a_schedule_that_never_runs_is_refused_when_used() -> None:
    never = Schedule.parse("0 0 0 31 FEB *")
    with pytest.raises(ScheduleError, match="no occurrence"):
        never.previous(at(22))
    with pytest.raises(ScheduleError, match="no occurrence"):
        never.next_after(at(22))


# windows


def test_window_ending_starts_at_the_previous_occurrence() -> None:
    assert HOURLY.window_ending(at(22, 14)) == Window(at(22, 13), at(22, 14))
    weekdays = Schedule.parse("0 0 9 * * 1-5")
    assert weekdays.window_ending(at(23, 9)) == Window(at(20, 9), at(23, 9))  # Mon: since Fri
    quarter = Schedule.parse("0 */15 * * * *")
    assert quarter.window_ending(at(23, 0)) == Window(at(22, 23, 45), at(23, 0))


def test_window_id_names_both_bounds() -> None:
    assert Window(at(22, 13), at(22, 14)).id == "20261122T1300Z-20261122T1400Z"
    assert Window(at(22, 13, 0, 30), at(22, 13, 1)).id == "20261122T130030Z-20261122T1301Z"


def test_window_ids_sort_by_time() -> None:
    starts = [at(9, 23), at(10, 0), at(10, 9), at(10, 10), at(1, 0, month=12)]
    windows = [Window(s, s + timedelta(hours=1)) for s in starts]
    ids = [w.id for w in windows]
    assert sorted(ids) == ids
    assert len(set(ids)) == len(ids)


def test_window_describe_is_iso() -> None:
    assert Window(at(22, 13), at(22, 14)).describe() == {
        "start": "2026-11-22T13:00:00Z",
        "end": "2026-11-22T14:00:00Z",
    }


def test_due_window_of_a_normal_run_is_the_one_just_closed() -> None:
    windows = HOURLY.due_windows(at(22, 14, 0, 3), last_run=at(22, 13), limit=24)
    assert windows == [Window(at(22, 13), at(22, 14))]


def test_due_window_without_last_run_is_the_one_just_closed() -> None:
    windows = HOURLY.due_windows(at(22, 14, 20), last_run=None, limit=24)
    assert windows == [Window(at(22, 13), at(22, 14))]


def test_past_due_run_catches_up_oldest_first() -> None:
    now = at(22, 14, 0, 2)
    windows = HOURLY.due_windows(now, last_run=now - timedelta(hours=5), limit=24)
    assert windows == [Window(at(22, h), at(22, h + 1)) for h in range(9, 14)]
    assert [w.start for w in windows] == sorted(w.start for w in windows)


def test_catch_up_is_capped_keeping_the_most_recent() -> None:
    windows = HOURLY.due_windows(at(22, 14), last_run=at(21, 14), limit=3)
    assert windows == [Window(at(22, h), at(22, h + 1)) for h in (11, 12, 13)]


def test_catch_up_crosses_midnight() -> None:
    windows = HOURLY.due_windows(at(22, 1, 0, 1), last_run=at(21, 22), limit=24)
    assert [w.id for w in windows] == [
        "20261121T2200Z-20261121T2300Z",
        "20261121T2300Z-20261122T0000Z",
        "20261122T0000Z-20261122T0100Z",
    ]


def test_last_run_in_the_future_gives_one_window() -> None:
    windows = HOURLY.due_windows(at(22, 14), last_run=at(23, 14), limit=24)
    assert windows == [Window(at(22, 13), at(22, 14))]


def test_weekday_catch_up_skips_the_weekend() -> None:
    schedule = Schedule.parse("0 0 9 * * MON-FRI")
    windows = schedule.due_windows(at(24, 9, 0, 1), last_run=at(19, 9), limit=10)
    assert windows == [
        Window(at(19, 9), at(20, 9)),  # Thu -> Fri
        Window(at(20, 9), at(23, 9)),  # Fri -> Mon
        Window(at(23, 9), at(24, 9)),  # Mon -> Tue
    ]


def test_day_and_weekday_must_both_match_as_azure_timers_do() -> None:
    """NCrontab (Azure timers) runs `0 0 0 13 * FRI` only on a Friday the 13th."""
    from datetime import UTC, datetime

    from llmops.drift.schedule import Schedule

    schedule = Schedule.parse("0 0 0 13 * FRI")
    friday_13th = datetime(2026, 11, 13, tzinfo=UTC)
    assert schedule.next_after(datetime(2026, 11, 1, tzinfo=UTC)) == friday_13th
    assert schedule.previous(datetime(2026, 11, 20, tzinfo=UTC)) == friday_13th
    assert schedule.next_after(friday_13th) == datetime(2027, 8, 13, tzinfo=UTC)
