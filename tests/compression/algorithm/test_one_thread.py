"""``one_thread``: torch on one thread inside, the caller's count restored after (also on an error)."""

from __future__ import annotations

import pytest
import torch

from netshrink.compression.algorithm.one_thread import one_thread


def test_one_thread_inside_and_the_count_restored_after() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), one_thread():
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
