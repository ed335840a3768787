"""Identifiers: tenant slugs (the vector store's names, lowercase), the system tenant, row ids."""

from __future__ import annotations

import os
import time

from pulse_ai.errors import InputError
from pulse_ai.vectors.scope import validate_name

__all__ = ["SYSTEM_TENANT", "new_id", "validate_tenant_id"]

# Calls made without a tenant (platform-internal work) are recorded under this id. It starts with
# '_', which no valid slug may, so no tenant can ever take it.
SYSTEM_TENANT = "_system"


def validate_tenant_id(value: object, *, allow_system: bool = True) -> str:
    """A tenant id: the vector store's name rules (letters, digits, '-', '_', alphanumeric at both
    ends, no '__', at most 64) in lowercase only; or the reserved system tenant when allowed."""
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
    return f"{millis:012x}{os.urandom(10).hex()}"
