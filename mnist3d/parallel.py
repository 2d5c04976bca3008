"""Row-chunked numpy work spread over the CPU's cores by threads (numpy releases the GIL in its loops)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def for_each_chunk(total: int, work: Callable[[slice], None], chunk: int = 32) -> None:
    """Call work(rows) for consecutive row slices of at most `chunk` covering range(total), one run per core.

    Each core takes one contiguous share, so chunks stay small enough for the cache and threads never
    write the same rows. The work must write only its own rows.
    """
    workers = max(1, min(usable_cores(), total // chunk))
    shares = [(total * part // workers, total * (part + 1) // workers) for part in range(workers)]

    def run(start: int, stop: int) -> None:
        for first in range(start, stop, chunk):
            work(slice(first, min(first + chunk, stop)))

    if workers == 1:
        run(0, total)
        return
    with ThreadPoolExecutor(workers) as pool:
        for share in [pool.submit(run, *bounds) for bounds in shares]:
            share.result()  # re-raises a worker's exception here


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
