"""The decision cache: a bounded LRU of policy decisions per served model (see the
package docstring for why and what the key holds)."""

from __future__ import annotations

from typing import Any

from cachetools import LRUCache

from router.policy import Decision

__all__ = ["DEFAULT_DECISION_CACHE_SIZE", "DecisionCache"]

#: Decisions remembered per served model (a few hundred bytes each).
DEFAULT_DECISION_CACHE_SIZE = 10_000


class DecisionCache:
    """A bounded LRU of policy decisions (cachetools' `LRUCache`): `get(key)` /
    `put(key, decision)`, counting `hits` and `misses`.

    Not locked: it is used from the event loop only (one process, one loop).
    `size` 0 remembers nothing.
    """

    __slots__ = ("size", "hits", "misses", "_items")

    def __init__(self, size: int = DEFAULT_DECISION_CACHE_SIZE) -> None:
        self.size = max(0, int(size))
        self.hits = 0
        self.misses = 0
        self._items: LRUCache[Any, tuple[Decision, tuple[str, ...]]] | None = (
            LRUCache(self.size) if self.size else None)

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    def get(self, key: Any) -> tuple[Decision, tuple[str, ...]] | None:
        item = self._items.get(key) if self._items is not None else None
        if item is None:
            self.misses += 1
        else:
            self.hits += 1
        return item

    def put(self, key: Any, value: tuple[Decision, tuple[str, ...]]) -> None:
        if self._items is not None:
            self._items[key] = value
