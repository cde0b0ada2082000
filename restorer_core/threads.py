"""How many threads CPU-side work (decoding, detection, encoding) runs on: the one place it is decided."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

# OpenCV's DNN and codecs spread one call over cores but gain little past a few, so several
# calls at once use a big machine better; a small one keeps a single thread.
CPUS_PER_WORKER = 4
MAX_WORKERS = 8


def cpu_workers(items: int, cpus: Optional[int] = None) -> int:
    """Threads for `items` independent images: one per CPUS_PER_WORKER cores, at most
    MAX_WORKERS and never more than the images (1 on a 2-core machine)."""
    if cpus is None:
        cpus = os.cpu_count() or 1
    return max(1, min(int(items), MAX_WORKERS, cpus // CPUS_PER_WORKER))


class ThreadMap:
    """`map(fn, items, workers)`: [fn(x) for x in items] in order, on up to `workers` threads
    that live as long as this object (so what a thread keeps, such as its own detector, is
    made once); on the calling thread when workers <= 1."""

    def __init__(self, name: str = "cpu"):
        self.name = name
        self._pool: Optional[ThreadPoolExecutor] = None
        self._size = 0
        self._lock = threading.Lock()

    def map(self, fn: Callable, items: Sequence, workers: int) -> list:
        items = list(items)
        if workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with self._lock:
            if self._pool is None or self._size < workers:
                old, self._pool, self._size = self._pool, ThreadPoolExecutor(workers, self.name), workers
                if old is not None:
                    old.shutdown(wait=False)
            pool = self._pool
        return list(pool.map(fn, items))
