"""In-process change counters: a cache of tenants' state (status, budgets, settings, credentials)
in this process is dropped as soon as this process changes one, without waiting for its TTL."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

__all__ = ["Changing", "counts_change"]

P = ParamSpec("P")
R = TypeVar("R")


class Changing(Protocol):
    changes: int


S = TypeVar("S", bound=Changing)


def counts_change(method: Callable[Concatenate[S, P], Awaitable[R]]) -> Callable[Concatenate[S, P], Awaitable[R]]:
    """Count a write once it is done (or failed: a cache read again is always safe)."""

    @functools.wraps(method)
    async def counted(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        finally:
            self.changes += 1

    return counted


def total(*holders: Any) -> int:
    return sum(int(getattr(holder, "changes", 0)) for holder in holders)
