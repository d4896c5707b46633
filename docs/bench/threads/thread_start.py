"""What starting a Python thread costs on this machine (why ``kernelized.cpu.run_parallel`` keeps its worker threads):
the median of 50 starts and joins of a thread that does nothing, beside one task handed to a kept pool.

    .venv/bin/python docs/bench/threads/thread_start.py > docs/bench/threads/thread_start.txt
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def median_us(fn, n: int = 50) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def start_and_join() -> None:
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()


def fresh_pool() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda _: None, range(2)))


def main() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        pool.submit(lambda: None).result()  # the pool's threads exist from here on
        kept = median_us(lambda: pool.submit(lambda: None).result())
    fresh = median_us(fresh_pool)
    print(f"start + join one thread: {median_us(start_and_join):.0f} us")
    print(f"a fresh 2-thread pool for 2 tasks (what run_parallel did per call): {fresh:.0f} us")
    print(f"one task on a kept pool: {kept:.0f} us")


if __name__ == "__main__":
    main()
