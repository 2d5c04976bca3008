"""one_ahead: every item in order, made off the caller's thread, and the maker's error reaches the caller."""

import threading

import pytest

from mnist3d.parallel import one_ahead


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
