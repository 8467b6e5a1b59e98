"""ArrayMemo: a value made once per array (and extra key) while the array lives."""

from __future__ import annotations

import gc

import numpy as np

from netshrink.compression.io.array_memo import ArrayMemo


def test_a_value_is_made_once_per_array_and_extra_key_and_goes_with_its_array() -> None:
    memo: ArrayMemo[float] = ArrayMemo()
    calls: list[str] = []

    def make(tag: str, value: float) -> float:
        calls.append(tag)
        return value

    a, b = np.ones(3), np.ones(3)  # equal values, two arrays
    assert memo.get(a, "cpu", lambda: make("a", 1.0)) == 1.0
    assert memo.get(a, "cpu", lambda: make("again", 9.0)) == 1.0  # made once
    assert memo.get(a, "cuda", lambda: make("a/cuda", 2.0)) == 2.0  # another extra key
    assert memo.get(b, "cpu", lambda: make("b", 3.0)) == 3.0  # identity, not equality
    assert calls == ["a", "a/cuda", "b"] and len(memo) == 3
    del a
    gc.collect()
    assert len(memo) == 1  # a's two entries went with it
    c = np.ones(3)  # may take a's id: still a new entry, never a's value
    assert memo.get(c, "cpu", lambda: make("c", 4.0)) == 4.0
