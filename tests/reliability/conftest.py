"""The reliability ledger: every fault injected and every bad input tried is recorded, and with
ADVLIB_RELIABILITY_REPORT=1 (`make reliability`) the session writes the README's "Reliability" figures from it."""

from __future__ import annotations

import os
import platform
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- reliability:begin (written by `make reliability`) -->", "<!-- reliability:end -->"
_LEDGER: list[dict[str, str]] = []


class Ledger:
    """Records (category, case, outcome) rows; a test records a row only after its assertions passed."""

    def record(self, category: str, case: str, outcome: str) -> None:
        _LEDGER.append({"category": category, "case": case, "outcome": outcome})


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return Ledger()


def _summary(session: pytest.Session) -> str:
    by_category: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in _LEDGER:
        by_category[row["category"]].append(row)
    lines = [
        BEGIN,
        "",
        f"From a pytest run including `tests/reliability` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
        f"{os.cpu_count()} cores): {session.testscollected} tests in the run, {session.testsfailed} failed.",
        "",
        "| category | cases | all handled as specified | examples |",
        "|---|---:|---|---|",
    ]
    for category, rows in sorted(by_category.items()):
        examples = "; ".join(dict.fromkeys(r["case"] for r in rows[:3]))
        lines.append(
            f"| {category} | {len(rows)} | {'yes' if session.testsfailed == 0 else 'see failures'} | {examples} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("ADVLIB_RELIABILITY_REPORT") != "1" or not _LEDGER:
        return
    text = README.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise RuntimeError(f"README.md has no reliability block ({BEGIN} ... {END})")
    README.write_text(pattern.sub(lambda _: _summary(session), text))
