"""A memo keyed by a NumPy array's identity: values that depend on a weight array alone (its σ
certificate, its column norms) made once per array while it lives.

NumPy arrays are not hashable, and a layer's weight is never written in place (a new weight is a new
array), so the key is ``id(array)`` plus the caller's extra key (a device, a shape), held next to a
weak reference to the array: the entry is dropped when the array is freed, before its id can be
reused. The budget search and the baselines measure many draws of one network, and each would
otherwise recompute these per draw (issue 10).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import numpy as np

__all__ = ["ArrayMemo"]

V = TypeVar("V")
_Key = tuple[int, Hashable]


class ArrayMemo(Generic[V]):
    """``get(array, extra, make)``: ``make()``'s value for (``array``, ``extra``), made once."""

    def __init__(self) -> None:
        self._entries: dict[_Key, tuple[weakref.ref[np.ndarray], V]] = {}

    def get(self, array: np.ndarray, extra: Hashable, make: Callable[[], V]) -> V:
        key = (id(array), extra)
        hit = self._entries.get(key)
        if hit is not None and hit[0]() is array:
            return hit[1]
        value = make()
        self._entries[key] = (weakref.ref(array, self._dropper(key)), value)
        return value

    def __len__(self) -> int:
        return len(self._entries)

    def _dropper(self, key: _Key) -> Callable[[weakref.ref[np.ndarray]], None]:
        def drop(_ref: weakref.ref[np.ndarray]) -> None:
            self._entries.pop(key, None)

        return drop
