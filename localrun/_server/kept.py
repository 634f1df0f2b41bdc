"""What the server keeps of what it computed: a thread-safe cache bounded by bytes.

Both things kept (series answers by ETag, history tables by revision and columns) are
immutable under their key, so a kept value is never stale; the only question is memory. Least
recently used first out; a value over ``largest`` bytes is not kept, so one huge answer cannot
flush every other. Handlers run in worker threads, hence the lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """An LRU of ``V`` by ``K``, at most ``max_bytes`` of them as ``size`` counts them."""

    def __init__(self, max_bytes: int, size: Callable[[V], int], largest: int) -> None:
        self.max_bytes = max_bytes
        self.largest = largest
        self._size_of = size
        self._values: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._values.get(key)
            if found is None:
                return None
            self._values.move_to_end(key)
            return found[0]

    def put(self, key: K, value: V) -> None:
        size = self._size_of(value)
        if size > self.largest:
            return
        with self._lock:
            if key in self._values:
                return
            self._values[key] = (value, size)
            self._size += size
            while self._size > self.max_bytes:
                _, (_, old) = self._values.popitem(last=False)
                self._size -= old
