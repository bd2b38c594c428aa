"""Processes building the same artifact at once end with one valid entry, one build, and no crash."""

from __future__ import annotations

import multiprocessing as mp
import time

import torch

from advlib.cache import Artifact, Cache, derive_key

WORKERS = 3


def _worker(root: str, value: float, start_at: float, queue) -> None:
    def slow() -> Artifact:
        time.sleep(0.5)
        return Artifact({"w": torch.full((2,), value)}, {"builder": value})

    time.sleep(max(0.0, start_at - time.time()))  # all workers ask at the same moment
    artifact = Cache(root).get_or_build(derive_key("model", shared=True), slow)
    queue.put((artifact.from_cache, float(artifact.tensors["w"][0])))


def test_processes_building_the_same_entry_at_once(tmp_path, ledger):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 3.0
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), float(i), start_at, queue)) for i in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcomes = sorted(queue.get(timeout=5) for _ in procs)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    assert [from_cache for from_cache, _ in outcomes] == [False] + [True] * (WORKERS - 1)  # one built, others loaded
    assert len({value for _, value in outcomes}) == 1  # everyone got the builder's tensors
    cache = Cache(tmp_path)
    assert len(list(cache.entries())) == 1 and cache.verify() == []
    assert not list((tmp_path / "model").glob(".tmp-*"))
    ledger.record("concurrency", f"{WORKERS} processes build one artifact at once", "one build, one valid entry")
