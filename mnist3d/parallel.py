"""Work beside work: the usable core count, and a generator made one item ahead on a worker thread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def one_ahead(items: Iterator[T]) -> Iterator[T]:
    """Yield from `items` while a worker thread already makes the next one, so making overlaps using.

    For blocks that are computed and then written: the write (a syscall and a CRC, both free of the GIL)
    then runs beside the next block's numpy work instead of after it.
    """
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(next, items, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, items, _END)
            yield item


_END = object()
