"""Run `soundmon train`'s trainings (CV folds and the final model) one after the other, or side by
side in spawned worker processes, one training each (`--jobs`).

TensorFlow on 2 cores gains little from a second intra-op thread at this model size (measured:
two 1-thread trainings side by side finish ~2x sooner than the same two one after the other
with 2 threads), so `--jobs` runs the CV folds and the final model as separate processes.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.fold_tasks import FinalTask, FoldTask

__all__ = ["run_tasks", "task_feats"]

_WORKER_FEATS: list | None = None  # a worker's copy of the clip features, sent once per worker


def task_feats(feats: list | None) -> list:
    """A task's features: its own, or (in a worker) the copy the pool's initializer left."""
    if feats is not None:
        return feats
    assert _WORKER_FEATS is not None, "task without features outside a training worker"
    return _WORKER_FEATS


def _exit_with_parent(parent_pid: int, every_s: float = 2.0) -> None:
    """End this worker when the training command is gone (killed, not interrupted): a pool
    worker would otherwise finish its hour-long training for nobody."""
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker_init(threads: int, feats: list, parent_pid: int) -> None:
    """A worker's start: follow the parent's exit, set TensorFlow's threads, keep the features."""
    global _WORKER_FEATS
    from training.train import set_threads

    _exit_with_parent(parent_pid)
    set_threads(threads)
    _WORKER_FEATS = feats


def run_tasks(fold_tasks: list[FoldTask], final_task: FinalTask, jobs: int):
    """Run the CV folds and the final model: one after the other here, or side by side in
    `jobs` processes. Returns (fold results in fold order, final result)."""
    if jobs <= 1:
        return [t() for t in fold_tasks], final_task()
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    # The features (~240 MB for UrbanSound8K folds 1-4) go to each worker once, through the
    # initializer, instead of with every task.
    feats = final_task.feats
    final_task = replace(final_task, feats=None)
    fold_tasks = [replace(t, feats=None) for t in fold_tasks]
    # spawn, not fork: TensorFlow's runtime is not fork-safe
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(threads, feats, os.getpid())) as pool:  # fmt: skip
        # Longest first (the final model, then folds by training-set size): the cores finish
        # together instead of one idling while the other trains the last fold.
        final = pool.submit(final_task)
        sizes = [int(np.sum(t.folds != t.fold)) for t in fold_tasks]
        futures: dict[int, object] = {}
        for i in sorted(range(len(fold_tasks)), key=lambda i: -sizes[i]):
            futures[i] = pool.submit(fold_tasks[i])
        return [futures[i].result() for i in range(len(fold_tasks))], final.result()
