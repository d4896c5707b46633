"""Where the runs of a sweep execute: ``local`` (this process, or spawned processes) or ``ray`` (Ray tasks).

A launcher takes the pending runs and a picklable ``call(run_fn, run, run_dir) -> (run_id, summary, error)``
and yields those triples as runs finish; the sweep runner writes every file, so results are collected, and runs
resumed, the same way whichever launcher ran them. Ray is an optional extra (``pip install kernelized[ray]``):
``ray.init()`` joins ``$RAY_ADDRESS`` when set, else starts a local instance; each run is a task asking for
its CPUs (the torch threads it will use) and, when it trains on CUDA, one GPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

LAUNCHERS = ("local", "ray")


def threads_per_run(workers: int) -> int:
    """Torch threads for each of ``workers`` concurrent runs on this machine."""
    return max(1, (os.cpu_count() or 1) // workers)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run a block on ``threads`` torch threads, then restore the caller's count (e.g. 1 for thousands of tiny
    draws, where intra-op threads only contend)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _die_with_parent() -> None:
    """Linux: the kernel sends this worker SIGTERM when the sweep process ends, however it ends (a `kill` of the
    sweep left its workers training on, writing into run folders a new sweep then also wrote)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not glibc: workers end when their queue closes, as before
        pass


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _init_local_worker(threads: int) -> None:
    _die_with_parent()
    _init_worker(threads)


def _threaded(threads: int, call: Callable, run_fn: Callable, run, run_dir: Path):
    _init_worker(threads)
    return call(run_fn, run, run_dir)


def launch_local(pending: Sequence, call: Callable, run_fn: Callable, out_dir: Path, workers: int) -> Iterator:
    """Serially in this process (``workers == 1``), else in ``workers`` spawned processes."""
    if workers == 1 or len(pending) <= 1:
        for run in pending:
            yield call(run_fn, run, out_dir / run.run_id)
        return
    ctx = get_context("spawn")
    threads = threads_per_run(workers)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_local_worker, initargs=(threads,)
    ) as pool:
        futures = [pool.submit(call, run_fn, run, out_dir / run.run_id) for run in pending]
        for future in as_completed(futures):
            yield future.result()


def launch_ray(
    pending: Sequence, call: Callable, run_fn: Callable, out_dir: Path, workers: int, gpus: Callable[[dict], float]
) -> Iterator:
    """One Ray task per run with ``num_cpus`` = its torch threads and ``num_gpus`` = ``gpus(config)``."""
    try:
        import ray
    except ImportError:
        raise ValueError("--launcher ray needs Ray: pip install 'kernelized[ray]' (or pip install ray)") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    threads = threads_per_run(workers)
    remote = ray.remote(_threaded)
    refs = [
        remote.options(num_cpus=threads, num_gpus=gpus(run.config)).remote(
            threads, call, run_fn, run, out_dir / run.run_id
        )
        for run in pending
    ]
    while refs:
        done, refs = ray.wait(refs, num_returns=1)
        yield ray.get(done[0])


def check_launcher(launcher: str) -> None:
    if launcher not in LAUNCHERS:
        raise ValueError(f"--launcher must be one of {list(LAUNCHERS)}, got {launcher!r}")
