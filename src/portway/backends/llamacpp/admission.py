"""The waiting room of a batched model: a bounded queue, fair across users.

Requests wait per user; admission takes them round-robin over the users that have
any waiting (the user served last goes to the back), so one user's burst of many
requests does not hold back another user's one. Within a user, first come, first
served. Not thread-safe: the engine guards it with its lock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Items queued per user, taken round-robin over users."""

    def __init__(self) -> None:
        self._by_user: OrderedDict[str, deque[T]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, user: str, item: T) -> None:
        self._by_user.setdefault(user, deque()).append(item)
        self._size += 1

    def peek(self) -> T | None:
        """The item ``pop`` would take next, or None."""
        for items in self._by_user.values():
            return items[0]
        return None

    def pop(self) -> T:
        """Takes the next user's oldest item; that user moves to the back."""
        user, items = next(iter(self._by_user.items()))
        item = items.popleft()
        del self._by_user[user]
        if items:
            self._by_user[user] = items
        self._size -= 1
        return item

    def remove_if(self, condition: Callable[[T], bool]) -> list[T]:
        """Removes (and returns) the items for which ``condition`` holds."""
        removed: list[T] = []
        for user in list(self._by_user):
            items = self._by_user[user]
            kept = deque(item for item in items if not condition(item))
            removed.extend(item for item in items if condition(item))
            if kept:
                self._by_user[user] = kept
            else:
                del self._by_user[user]
        self._size -= len(removed)
        return removed
