"""Time `Redactor.text()` on typical chat messages (µs per call, best of 5 timeit repeats).

.venv/bin/python bench/redact_speed.py
"""

from __future__ import annotations

import functools
import timeit

from llmops.redact import Redactor

MESSAGES = {
    "prose, nothing to find": (
        "Could you help me rewrite this paragraph so it sounds friendlier? Our team wants to "
        "thank everyone who joined the workshop last week and invite them to share feedback "
        "before the next session starts."
    ),
    "digits, colon, key word": (
        "Summary: the job ran 3 times in 2026 and processed 1,234,567 rows at 12:30:45 using "
        "version 10.0.19045; the API key rotation is planned for 2026-11-22, see ticket 4821 "
        "and keep the batch size at 300."
    ),
    "code snippet": (
        "def load(path: str) -> dict[str, int]:\n    with open(path) as f:\n        data = "
        "json.load(f)\n    return {k: int(v) for k, v in data.items() if v}  # 2 passes, "
        "api_key=settings.api_key"
    ),
    "with an e-mail and a phone": (
        "Hi, I'm Jane (jane.doe@example.com). Please call me back on +44 20 7946 0958 after "
        "3pm about order 55123; my colleague at 415-555-2671 has the details of the invoice."
    ),
}


def main() -> None:
    redactor = Redactor()
    for name, message in MESSAGES.items():
        timer = timeit.Timer(functools.partial(redactor.text, message))
        number, _ = timer.autorange()
        best = min(timer.repeat(repeat=7, number=number)) / number
        print(f"{name:28} {len(message):4} chars  {best * 1e6:7.1f} µs")


if __name__ == "__main__":
    main()
