"""Identifiers: tenant slugs (the vector store's names, lowercase), the system tenant, row ids."""

from __future__ import annotations

import functools
import os
import random
import time

from pulse_ai.errors import InputError
from pulse_ai.vectors.scope import validate_name

__all__ = ["SYSTEM_TENANT", "new_id", "validate_tenant_id"]

# Calls made without a tenant (platform-internal work) are recorded under this id. It starts with
# '_', which no valid slug may, so no tenant can ever take it.
SYSTEM_TENANT = "_system"
# Ids need to be unique, not secret: a generator seeded from the OS (again in a forked child),
# without a system call per id.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)


def validate_tenant_id(value: object, *, allow_system: bool = True) -> str:
    """A tenant id: the vector store's name rules (letters, digits, '-', '_', alphanumeric at both
    ends, no '__', at most 64) in lowercase only; or the reserved system tenant when allowed."""
    if isinstance(value, str):
        return _checked_once(value, allow_system)
    return _check(value, allow_system)


@functools.lru_cache(maxsize=4096)  # the call path checks every call's tenant: valid ids once
def _checked_once(value: str, allow_system: bool) -> str:
    return _check(value, allow_system)


def _check(value: object, allow_system: bool) -> str:
    if value == SYSTEM_TENANT:
        if allow_system:
            return SYSTEM_TENANT
        raise InputError(f"{SYSTEM_TENANT!r} is the reserved system tenant")
    name = validate_name(value, "tenant id")
    if name != name.lower():
        raise InputError(f"tenant id {name[:80]!r} must be lowercase")
    if not name[-1].isalnum():  # the store's pattern lets a '-' end a name; a tenant id may not
        raise InputError(f"tenant id {name[:80]!r} must end with a letter or digit")
    return name


def new_id() -> str:
    """32 hex characters, time-ordered (48-bit milliseconds, then 80 random bits), like a UUIDv7:
    rows written together sit together in an index."""
    millis = time.time_ns() // 1_000_000
    return f"{millis:012x}{_random.getrandbits(80):020x}"
