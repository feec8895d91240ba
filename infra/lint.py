"""`make lint-infra`: checkov over infra/ (Bicep), with parse errors as failures.

checkov reports a Bicep file it cannot parse in `parsing_errors` and otherwise ignores it, with
exit code 0 if nothing else failed; this wrapper fails on those too, and on a suppression
without a reason. Run with the checkov virtual environment's Python (see the Makefile).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

INFRA = Path(__file__).resolve().parent
NO_REASON = "No comment provided"  # what checkov records for `checkov:skip=ID` without `:reason`


def main() -> int:
    checkov = Path(sys.executable).with_name("checkov")
    command = [str(checkov), "--directory", str(INFRA), "--framework", "bicep"]
    command += ["--output", "json", "--skip-download"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        reports = json.loads(done.stdout)
    except json.JSONDecodeError:
        print(done.stdout[-2000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
        print(f"lint-infra: checkov gave no JSON report (exit {done.returncode})", file=sys.stderr)
        return 1
    reports = reports if isinstance(reports, list) else [reports]
    report = next((r for r in reports if r.get("check_type") == "bicep"), None)
    if report is None:
        print(f"lint-infra: checkov found no Bicep under {INFRA}", file=sys.stderr)
        return 1

    summary, results = report["summary"], report["results"]
    problems: list[str] = []
    for path in results.get("parsing_errors", []):
        problems.append(f"parse error: {path}")
    for check in results.get("failed_checks", []):
        start, end = check["file_line_range"]
        where = f"infra{check['file_path']}:{start}-{end}"
        problems.append(f"{check['check_id']} {where} {check['resource']}: {check['check_name']}")
    for check in results.get("skipped_checks", []):
        if check.get("check_result", {}).get("suppress_comment", NO_REASON) == NO_REASON:
            problems.append(
                f"{check['check_id']} infra{check['file_path']}: skipped without a reason"
            )

    print(
        f"checkov {summary.get('checkov_version')} (bicep): {summary['passed']} passed, "
        f"{summary['failed']} failed, {summary['skipped']} skipped (each with its reason in "
        f"place), {summary['parsing_errors']} parse errors"
    )
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    if problems:
        print(
            "lint-infra: fix each finding, or suppress it inside the resource with "
            "`// checkov:skip=CKV_...:one-line reason`",
            file=sys.stderr,
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
