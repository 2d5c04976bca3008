"""Chunked work over threads: every row exactly once, and a worker's error reaches the caller."""

import threading

import pytest

from mnist3d import parallel
from mnist3d.parallel import for_each_chunk, one_ahead


@pytest.mark.parametrize("total", [0, 1, 31, 32, 33, 200])
def test_every_row_is_done_once_in_chunks(total, monkeypatch):
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    seen, threads = [], set()

    def work(rows: slice) -> None:
        assert rows.stop - rows.start <= 32
        seen.extend(range(rows.start, rows.stop))
        threads.add(threading.get_ident())

    for_each_chunk(total, work, chunk=32)
    assert sorted(seen) == list(range(total))
    main = threading.main_thread().ident
    if total >= 64:  # a full chunk for each of the two cores: the shares run on pool threads
        assert threads and main not in threads
    else:  # too little to split: done in the caller's thread, with no pool to start
        assert threads <= {main}


def test_a_failing_chunk_raises_in_the_caller(monkeypatch):
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)

    def work(rows: slice) -> None:
        if rows.start >= 64:
            raise ValueError(f"bad rows {rows}")

    with pytest.raises(ValueError, match="bad rows"):
        for_each_chunk(128, work, chunk=16)


def test_one_ahead_yields_every_item_in_order_and_makes_them_off_the_caller_thread():
    makers = []

    def items():
        for number in range(5):
            makers.append(threading.get_ident())
            yield number

    assert list(one_ahead(items())) == [0, 1, 2, 3, 4]
    assert threading.get_ident() not in makers


def test_one_ahead_passes_on_the_makers_error():
    def items():
        yield 1
        raise OSError("disk gone")

    made = one_ahead(items())
    assert next(made) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(made)
