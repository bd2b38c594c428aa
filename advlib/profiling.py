"""Where a run's time goes: every cache build and every published table is a timed stage, counted exclusive of the
stages inside it, so a cold run splits into training, attacks and evaluation. Native: cProfile sees functions, not
these domain stages, and torch.profiler sees operators."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StageTimer", "start_timer", "timed"]


@dataclass
class StageTimer:
    """Stages as (kind, label) -> [count, seconds exclusive of nested stages], and the seconds since it started."""

    started: float = field(default_factory=time.perf_counter)
    totals: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    _inner: list[float] = field(default_factory=list)  # per open stage: seconds spent in the stages nested in it

    @contextmanager
    def stage(self, kind: str, label: str) -> Iterator[None]:
        began = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            seconds = time.perf_counter() - began
            inner = self._inner.pop()
            if self._inner:
                self._inner[-1] += seconds
            entry = self.totals.setdefault((kind, label), [0, 0.0])
            entry[0] += 1
            entry[1] += seconds - inner

    def summary(self) -> dict[str, Any]:
        """JSON-able: the wall seconds so far, each stage's count and exclusive seconds (largest first), and the
        seconds outside every stage (imports, data, cache loads, figures)."""
        wall = time.perf_counter() - self.started
        stages = [
            {"kind": kind, "label": label, "count": int(count), "seconds": round(seconds, 3)}
            for (kind, label), (count, seconds) in sorted(self.totals.items(), key=lambda item: -item[1][1])
        ]
        staged = sum(seconds for _, seconds in self.totals.values())
        return {"wall_s": round(wall, 3), "outside_stages_s": round(max(0.0, wall - staged), 3), "stages": stages}


_active: list[StageTimer] = []


def start_timer() -> StageTimer:
    """A new timer that `timed` stages report to from now on (the latest started one; a notebook's `Run` starts it)."""
    timer = StageTimer()
    _active[:] = [timer]
    return timer


@contextmanager
def timed(kind: str, label: str) -> Iterator[None]:
    """Time the block as stage (kind, label) on the active timer; without one it only runs the block."""
    if not _active:
        yield
        return
    with _active[0].stage(kind, label):
        yield
