"""Tenant scope: validated names, deterministic point ids, collection names and scoped filters.

Everything the store builds from caller input goes through here, so that no path, collection name
or filter is ever made from raw input.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pulse_ai.errors import InputError

__all__ = [
    "SHARED_PREFIX",
    "All",
    "Layout",
    "Match",
    "MatchAnyOf",
    "QueryOptions",
    "VectorSpace",
    "check_int64",
    "check_text",
    "collection_name",
    "content_hash",
    "metadata_filter",
    "metadata_hash",
    "parse_collection_name",
    "point_id",
    "query_options",
    "tenant_collection_prefix",
    "validate_name",
    "validate_record_id",
]

MAX_NAME_LENGTH = 64
MAX_RECORD_ID_LENGTH = 512
# Letters, digits, `_` and `-`; starting and ending with a letter or digit, and no `__` (the
# separator inside collection names), so that a collection name decodes to one (tenant, table).
# Matched in full (``fullmatch``: ``$`` would accept a trailing newline). Tenant ids are lower case
# only: on a case-insensitive filesystem ``Acme`` and ``acme`` would share one directory.
_TABLE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_))*(?<![_-])")
_TENANT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]|_(?!_))*(?<![_-])")
_METADATA_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
#: What ``VectorSpace.slug`` makes: letters, digits and '-', ending in 10 hex digits (a hash).
_SPACE_SLUG = re.compile(r"[A-Za-z0-9-]*[0-9a-f]{10}")
#: Qdrant keeps integers as signed 64-bit values; anything wider is refused, not wrapped or crashed on.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Deeper metadata is refused: JSON encoders and the engine's converters recurse once per level.
MAX_METADATA_DEPTH = 32
#: ``hnsw_ef`` beyond this is refused: the engine sizes its search queue by it.
MAX_HNSW_EF = 100_000
# A fixed namespace: point ids must be the same on every machine and every run.
_POINT_NAMESPACE = uuid.UUID("5b1f5d0e-3c1a-4d0f-9a59-70756c73652d")

#: Every shared-layout collection's name starts with this; no per-tenant one's does.
SHARED_PREFIX = "shared__"
TENANT_KEY = "tenant_id"
TABLE_KEY = "table"
RECORD_KEY = "record_id"
CONTENT_HASH_KEY = "content_hash"
METADATA_HASH_KEY = "metadata_hash"
METADATA_KEY = "metadata"


class Layout(StrEnum):
    PER_TENANT_TABLE = "per_tenant_table"
    SHARED = "shared"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int64(value: int, what: str) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise InputError(f"{what}: the integer {value} does not fit in 64 bits (Qdrant's integer range)")
    return value


@dataclass(frozen=True)
class VectorSpace:
    """What a collection holds: vectors of one model identity and size (see ModelSpec.vector_space)."""

    id: str
    dimensions: int

    @property
    def slug(self) -> str:
        """A collection-name-safe form; the hash keeps two spaces with the same slug apart."""
        readable = re.sub(r"[^A-Za-z0-9-]+", "-", self.id).strip("-")[:48]
        digest = hashlib.sha256(self.id.encode()).hexdigest()[:10]
        return f"{readable}-{digest}"


@dataclass(frozen=True)
class QueryOptions:
    limit: int
    score_threshold: float | None = None
    hnsw_ef: int | None = None
    exact: bool = False


@dataclass(frozen=True)
class Match:
    key: str
    value: str | int | bool


@dataclass(frozen=True)
class MatchAnyOf:
    key: str
    values: tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True)
class All:
    """Every condition must hold (Qdrant's ``must``); conditions may be nested ``All``."""

    conditions: tuple[Match | MatchAnyOf | All, ...]


Condition = Match | MatchAnyOf | All


def check_text(value: str, what: str, index: int | None = None) -> str:
    """Refuse a string that is not valid Unicode (a lone surrogate such as "\\ud800"): no hash, id,
    payload or request could be made of it, so it is refused here, naming the field."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what} holds a lone surrogate ({value[exc.start]!r} at position {exc.start}); text must be valid Unicode",
            index=index,
        ) from None
    return value


def validate_name(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InputError(f"{what} is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InputError(f"{what} is {len(value)} characters long; at most {MAX_NAME_LENGTH}")
    tenant = what == "tenant"
    if not (_TENANT_NAME if tenant else _TABLE_NAME).fullmatch(value):
        if tenant and _TABLE_NAME.fullmatch(value):
            raise InputError(f"tenant {value!r} has upper-case letters; tenant ids are lower case ({value.lower()!r})")
        letters = "lower-case letters" if tenant else "letters"
        raise InputError(
            f"{what} {value[:80]!r} may hold only {letters}, digits, '_' and '-', must start and end with a "
            "letter or digit, and may not contain '__'"
        )
    return value


def validate_record_id(value: object, index: int | None = None, field: str = "records") -> str:
    where = f"{field}[{index}]" if index is not None else "record_id"
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InputError(f"{where}: the record id must be a string, not {type(value).__name__}", index=index)
    if not value.strip():
        raise InputError(f"{where}: the record id is empty", index=index)
    if len(value) > MAX_RECORD_ID_LENGTH:
        raise InputError(f"{where}: the record id is longer than {MAX_RECORD_ID_LENGTH} characters", index=index)
    return check_text(value, f"{where}: the record id", index)


def point_id(tenant: str, table: str, record_id: str) -> str:
    """uuid5 of (tenant, table, record id): the same record always lands on the same point."""
    # Tenant and table names cannot hold the separator, so the key decodes to one triple.
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{tenant}\x1f{table}\x1f{record_id}"))


def collection_name(layout: Layout, space: VectorSpace, tenant: str, table: str) -> str:
    if layout is Layout.SHARED:
        return f"{SHARED_PREFIX}{space.slug}"
    return f"{tenant_collection_prefix(tenant)}{table}__{space.slug}"


def tenant_collection_prefix(tenant: str) -> str:
    """Every per-tenant collection of ``tenant`` starts with this, and no other tenant's does."""
    return f"client_{tenant}__"


def parse_collection_name(name: str) -> tuple[str | None, str | None] | None:
    """(tenant, table) of a per-tenant collection name, (None, None) for a shared one, None when
    ``name`` is not a collection name this package makes."""
    if name.startswith(SHARED_PREFIX):
        return (None, None) if _SPACE_SLUG.fullmatch(name.removeprefix(SHARED_PREFIX)) else None
    parts = name.removeprefix("client_").split("__") if name.startswith("client_") else []
    if len(parts) != 3 or not _SPACE_SLUG.fullmatch(parts[2]):
        return None
    tenant, table = parts[0], parts[1]
    if not _TENANT_NAME.fullmatch(tenant) or len(tenant) > MAX_NAME_LENGTH:
        return None
    if not _TABLE_NAME.fullmatch(table) or len(table) > MAX_NAME_LENGTH:
        return None
    return tenant, table


def scope_filter(tenant: str, table: str | None, caller: All | None = None) -> All:
    """The tenant condition the store adds itself, with the caller's filter nested under it."""
    conditions: list[Condition] = [Match(TENANT_KEY, tenant)]
    if table is not None:
        conditions.append(Match(TABLE_KEY, table))
    if caller is not None and caller.conditions:
        conditions.append(caller)
    return All(tuple(conditions))


def metadata_filter(where: Mapping[str, object] | None) -> All | None:
    """``{"status": "open", "priority": [1, 2]}`` -> conditions on the records' metadata.

    Only a mapping or None: ``0``, ``[]`` or ``""`` are refused, never read as "no filter"."""
    if where is None:
        return None
    if not isinstance(where, Mapping):
        raise InputError(
            f"where must be a mapping of metadata field to value or list of values, or None; not {type(where).__name__}"
        )
    conditions: list[Condition] = []
    for key, value in where.items():
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            raise InputError(f"filter field {key!r} is not a valid metadata field name")
        path = f"{METADATA_KEY}.{key}"
        what = f"where[{key!r}]"
        if isinstance(value, (list, tuple)):
            if not value:
                raise InputError(f"{what}: the list of values is empty")
            if all(isinstance(v, str) for v in value):
                conditions.append(MatchAnyOf(path, tuple(check_text(v, f"{what}[{i}]") for i, v in enumerate(value))))
            elif all(_is_int(v) for v in value):
                conditions.append(MatchAnyOf(path, tuple(check_int64(int(v), what) for v in value)))
            else:
                raise InputError(f"{what}: a list must hold only strings or only integers")
        elif isinstance(value, int) and not isinstance(value, bool):
            conditions.append(Match(path, check_int64(value, what)))
        elif isinstance(value, str):
            conditions.append(Match(path, check_text(value, what)))
        elif isinstance(value, bool):
            conditions.append(Match(path, value))
        else:
            raise InputError(f"{what}: match a string, an integer, a boolean or a list of them")
    return All(tuple(conditions)) if conditions else None


def query_options(limit: object, score_threshold: object, hnsw_ef: object, exact: object) -> QueryOptions:
    """Search options, checked the same way for every backend before any call."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise InputError("limit must be an integer from 1 to 10000")
    threshold: float | None = None
    if score_threshold is not None:
        if not isinstance(score_threshold, (int, float)) or isinstance(score_threshold, bool):
            raise InputError(f"score_threshold must be a number, not {type(score_threshold).__name__}")
        try:
            threshold = float(score_threshold)
        except OverflowError:  # an int too large for a float (10**400)
            threshold = math.inf
        if not math.isfinite(threshold):
            raise InputError("score_threshold must be a finite number (not NaN or infinite)")
    if hnsw_ef is not None and (
        not isinstance(hnsw_ef, int) or isinstance(hnsw_ef, bool) or not 1 <= hnsw_ef <= MAX_HNSW_EF
    ):
        raise InputError(f"hnsw_ef must be an integer from 1 to {MAX_HNSW_EF}")
    if not isinstance(exact, bool):
        raise InputError(f"exact must be True or False, not {type(exact).__name__}")
    return QueryOptions(limit, threshold, hnsw_ef, exact)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def metadata_hash(metadata: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(metadata).encode("utf-8")).hexdigest()


def canonical_json(metadata: Mapping[str, Any]) -> str:
    try:
        return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"metadata must be JSON (strings, numbers, booleans, lists, objects): {exc}") from None


def check_metadata(metadata: object, index: int | None = None) -> dict[str, Any]:
    where = f"records[{index}].metadata" if index is not None else "metadata"
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InputError(f"{where} must be a mapping, not {type(metadata).__name__}", index=index)
    _check_metadata_values(metadata, where, index)
    canonical_json(metadata)
    return dict(metadata)


def _check_metadata_values(metadata: Mapping[str, Any], where: str, index: int | None) -> None:
    """Keys (strings, at every level), text (valid Unicode), depth and integer range, walked
    without recursion (so a deep value cannot overflow the stack)."""
    pending: list[tuple[object, int, str]] = [(metadata, 1, where)]
    while pending:
        value, depth, at = pending.pop()
        if isinstance(value, Mapping):
            if depth > MAX_METADATA_DEPTH:
                raise InputError(f"{where} is nested more than {MAX_METADATA_DEPTH} levels deep", index=index)
            for key, child in value.items():
                if not isinstance(key, str):
                    raise InputError(f"{at}: keys must be strings, not {type(key).__name__} ({key!r})", index=index)
                check_text(key, f"{at}: the key {key!r}", index)
                pending.append((child, depth + 1, f"{at}[{key!r}]"))
        elif isinstance(value, (list, tuple)):
            if depth > MAX_METADATA_DEPTH:
                raise InputError(f"{where} is nested more than {MAX_METADATA_DEPTH} levels deep", index=index)
            pending.extend((child, depth + 1, f"{at}[{i}]") for i, child in enumerate(value))
        elif isinstance(value, str):
            check_text(value, at, index)
        elif _is_int(value) and not INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
            raise InputError(f"{at}: the integer {value} does not fit in 64 bits", index=index)
