"""The daemon keeps numpy's BLAS on one thread (its worker threads only spin on tiny products)."""

import subprocess
import sys


def test_single_threaded_blas_limits_every_blas_library_to_one_thread():
    # In a fresh interpreter: the limit lasts for the process, so it must not leak into the tests.
    code = (
        "from threadpoolctl import threadpool_info\n"
        "from monitor.blas import single_threaded_blas\n"
        "single_threaded_blas()\n"
        "blas = [p for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "assert blas, 'numpy loaded no BLAS library'\n"
        "print(sorted({p['num_threads'] for p in blas}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1]"
