"""Who is calling: one object, built once at the edge and passed down to every layer.

``ai.tenant("acme")`` in Python, the API key in the service: both make a ``CallContext``; the
budget, cache, router and ledger layers read the tenant (and the key and request ids) from it and
never take a loose tenant string. Calls made without a tenant (platform-internal work) run under
the reserved system tenant, so that they are recorded like any other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

from pulse_ai.db.ids import SYSTEM_TENANT, validate_tenant_id

__all__ = ["SYSTEM_TENANT", "CallContext", "new_request_id", "validate_tenant_id"]


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class CallContext:
    """The tenant a call is for, the API key it came with (in the service), its request id and
    the pipeline it uses. ``for_call`` gives each call its own request id."""

    tenant_id: str
    api_key_id: str | None = None
    request_id: str = field(default_factory=new_request_id)
    pipeline: str | None = None

    def __post_init__(self) -> None:
        validate_tenant_id(self.tenant_id)

    @property
    def is_system(self) -> bool:
        return self.tenant_id == SYSTEM_TENANT

    def for_call(self, pipeline: str | None = None) -> CallContext:
        """The same caller, a new request id (and the pipeline this call uses)."""
        return replace(self, request_id=new_request_id(), pipeline=pipeline)
