"""The drift monitor's timer function: a thin trigger over `DriftMonitor.run_due`.

The schedule is the app setting `LLMOPS_DRIFT_SCHEDULE` (NCRONTAB, e.g. `0 0 * * * *`), read
by the host (`%...%`), so it must be set wherever the app runs; infra/ and
local.settings.example.json set it. The schedule monitor is on: after downtime the host runs
the timer once, past due, and tells when it last ran, so the missed windows are computed too
(at most `LLMOPS_DRIFT_CATCHUP`). Timer functions are not retried; a failed run logs and the
next period's run goes on.
"""

# No `from __future__ import annotations`: the worker inspects these annotations as classes.
import azure.functions as func

from llmops.drift.run import run_timer

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("drift_monitor")
@bp.timer_trigger(
    arg_name="timer", schedule="%LLMOPS_DRIFT_SCHEDULE%", run_on_startup=False, use_monitor=True
)
async def drift_monitor(timer: func.TimerRequest) -> None:
    """Analyse the window(s) that closed: reports, metrics, retraining hand-off."""
    await run_timer(timer.past_due, getattr(timer, "schedule_status", None))
