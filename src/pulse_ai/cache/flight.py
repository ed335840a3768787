"""Single flight: concurrent requests for the same missing key make one provider call.

The first request to miss a key owns it and computes it; requests that miss it meanwhile join and
await the owner's result. An owner always resolves what it owns (with the value, or ``None`` when
its call failed or was cancelled), before it awaits anything it joined, so two requests that own
and join each other's keys cannot wait on each other. A joiner whose owner failed computes the
value itself. Keys include the tenant scope, so only requests that could share a cache entry share
a flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

__all__ = ["Flights"]

T = TypeVar("T")


class Flights(Generic[T]):
    """In-flight computations by key, in one event loop at a time."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T | None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._flights)

    def claim(self, keys: Sequence[str]) -> tuple[list[int], dict[int, asyncio.Future[T | None]]]:
        """Split ``keys`` (indices into it) into those this request now owns and those it joins.
        A key listed twice is owned (or joined) once, at its first index."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # futures of a closed loop can never complete
            self._flights.clear()
            self._loop = loop
        owned: list[int] = []
        joined: dict[int, asyncio.Future[T | None]] = {}
        seen: set[str] = set()
        for index, key in enumerate(keys):
            if key in seen:
                continue
            seen.add(key)
            flight = self._flights.get(key)
            if flight is None:
                self._flights[key] = loop.create_future()
                owned.append(index)
            else:
                joined[index] = flight
        return owned, joined

    def resolve(self, key: str, value: T | None) -> None:
        flight = self._flights.pop(key, None)
        if flight is not None and not flight.done():
            flight.set_result(value)

    def abandon(self, keys: Iterable[str]) -> None:
        """Resolve what is still owned with None (the owner failed or was cancelled)."""
        for key in keys:
            self.resolve(key, None)
