"""Keep numpy's BLAS on one thread in the daemon's process.

numpy's wheels bundle OpenBLAS, which starts a worker per core and lets the workers spin for a
while after each call. The daemon's matrix products are tiny (a few new frames x 257 FFT bins x
64 mel bands per hop), so the workers never make a hop faster, but they burn a second core:
measured on a 2-core x86-64 machine, `soundmon run --pace fast` on 10 min of audio took 9.6 s of
user CPU with OpenBLAS's default threads and 5.0 s with one, in the same wall time. A Pi has
four cores for them to spin on. threadpoolctl is the maintained way to set this after numpy is
imported (the OPENBLAS_NUM_THREADS variable only works before).
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits

__all__ = ["single_threaded_blas"]


def single_threaded_blas() -> None:
    """Limit every BLAS library loaded in this process to one thread, for the process's lifetime."""
    import numpy  # noqa: F401  (loads numpy's BLAS so that threadpoolctl can find it)

    threadpool_limits(limits=1, user_api="blas")
