"""The test scripts' assertion helper: fail loudly on the first wrong answer, count the right ones."""

from __future__ import annotations

import sys

passed = 0


def check(condition: bool, what: str) -> None:
    global passed
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    passed += 1
