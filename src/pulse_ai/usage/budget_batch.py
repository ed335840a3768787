"""The budget arithmetic of one group-commit batch, inside its write transaction.

Every transaction locks in one order, reservations being finished (by id), then budget counters
(by budget and period), so concurrent writers (other processes, other machines on PostgreSQL)
never deadlock. The check and the increment of a counter happen under its lock, so two writers
can never both take the last room in a budget: on PostgreSQL the counter rows are locked with
``SELECT ... FOR UPDATE``; on SQLite the transaction began with ``BEGIN IMMEDIATE``, which holds
the database's write lock from the first statement. All of a reservation's budgets move
together or not at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from sqlalchemy import Connection, bindparam, insert, select, update

from pulse_ai.db.database import Database
from pulse_ai.db.ids import new_id
from pulse_ai.db.models import (
    BudgetCounterRow,
    BudgetMode,
    BudgetRow,
    ReservationHoldRow,
    ReservationRow,
    ReservationStatus,
    TenantRow,
    TenantStatus,
)
from pulse_ai.db.money import nano_to_usd
from pulse_ai.db.types import UTCDateTime
from pulse_ai.errors import BudgetExceededError, NotFoundError, PulseAIError, TenantSuspendedError
from pulse_ai.usage.budget_types import Budget, BudgetHold, BudgetStatus, Reservation, period_start

__all__ = ["FinishRequest", "ReserveRequest", "apply_budget_changes"]

Key = tuple[str, date]  # (budget id, period start)


@dataclass(frozen=True)
class ReserveRequest:
    tenant_id: str
    pipeline: str | None
    cost_nanousd: int
    tokens: int
    ttl_s: float


@dataclass(frozen=True)
class FinishRequest:
    """Settle (actual cost -> spent), release (give the reservation back), or expire (the same, by the sweep)."""

    reservation_id: str
    action: Literal["settle", "release", "expire"]
    cost_nanousd: int = 0
    tokens: int = 0


_COUNTER_DELTA = (
    update(BudgetCounterRow)
    .where(
        BudgetCounterRow.budget_id == bindparam("k_budget"),
        BudgetCounterRow.period_start == bindparam("k_period"),
    )
    .values(
        spent_nanousd=BudgetCounterRow.spent_nanousd + bindparam("d_spent"),
        reserved_nanousd=BudgetCounterRow.reserved_nanousd + bindparam("d_reserved"),
        spent_tokens=BudgetCounterRow.spent_tokens + bindparam("d_spent_tokens"),
        reserved_tokens=BudgetCounterRow.reserved_tokens + bindparam("d_reserved_tokens"),
    )
)
# The reservations being finished, locked, each with the counters it holds (one row per hold).
_LOCK_RESERVATIONS = (
    select(
        ReservationRow.id,
        ReservationRow.status,
        ReservationRow.cost_nanousd,
        ReservationRow.tokens,
        ReservationHoldRow.budget_id,
        ReservationHoldRow.period_start,
    )
    .outerjoin(ReservationHoldRow, ReservationHoldRow.reservation_id == ReservationRow.id)
    .where(ReservationRow.id.in_(bindparam("ids", expanding=True)))
    .order_by(ReservationRow.id)
    .with_for_update(of=ReservationRow)
)
# The tenants of new reservations (do they exist, are they active) with their budgets.
_TENANT_BUDGETS = (
    select(TenantRow.id.label("tenant"), TenantRow.status.label("tenant_status"), BudgetRow.__table__)
    .outerjoin(BudgetRow, BudgetRow.tenant_id == TenantRow.id)
    .where(TenantRow.id.in_(bindparam("tenants", expanding=True)))
)
_LOCK_COUNTERS = (
    select(BudgetCounterRow.__table__)
    .where(
        BudgetCounterRow.budget_id.in_(bindparam("budgets", expanding=True)),
        BudgetCounterRow.period_start.in_(bindparam("periods", expanding=True)),
    )
    .order_by(BudgetCounterRow.budget_id, BudgetCounterRow.period_start)
    .with_for_update()
)
_INSERT_RESERVATIONS = insert(ReservationRow)
_INSERT_HOLDS = insert(ReservationHoldRow)
_FINISH = (
    update(ReservationRow)
    .where(ReservationRow.id == bindparam("k_id"))
    .values(
        status=bindparam("v_status"),
        finished_at=bindparam("v_finished", type_=UTCDateTime()),
        settled_nanousd=bindparam("v_settled"),
        settled_tokens=bindparam("v_settled_tokens"),
    )
)


class _Counter:
    """A counter's values as this transaction sees them (its locked read plus this batch's changes)."""

    __slots__ = ("reserved", "reserved_tokens", "spent", "spent_tokens")

    def __init__(self, spent: int = 0, reserved: int = 0, spent_tokens: int = 0, reserved_tokens: int = 0) -> None:
        self.spent, self.reserved, self.spent_tokens, self.reserved_tokens = (
            spent,
            reserved,
            spent_tokens,
            reserved_tokens,
        )

    def add(self, spent: int, reserved: int, spent_tokens: int, reserved_tokens: int) -> None:
        self.spent += spent
        self.reserved += reserved
        self.spent_tokens += spent_tokens
        self.reserved_tokens += reserved_tokens

    def status(self, budget: Budget, start: date) -> BudgetStatus:
        return BudgetStatus(
            budget, start, nano_to_usd(self.spent), nano_to_usd(self.reserved), self.spent_tokens, self.reserved_tokens
        )


@dataclass(frozen=True, slots=True)
class _Applicable:
    """A budget that applies to a reservation, with its limits in the counters' units."""

    budget: Budget
    key: Key
    limit_nanousd: int | None
    limit_tokens: int | None
    hard: bool


_STATUS_OF_ACTION = {
    "settle": ReservationStatus.SETTLED.value,
    "release": ReservationStatus.RELEASED.value,
    "expire": ReservationStatus.EXPIRED.value,
}
_FINISHED = (ReservationStatus.SETTLED.value, ReservationStatus.RELEASED.value)


def apply_budget_changes(
    db: Database,
    connection: Connection,
    reserves: Sequence[ReserveRequest],
    finishes: Sequence[FinishRequest],
    now: datetime,
) -> tuple[list[Reservation | PulseAIError], list[bool]]:
    """Apply ``finishes`` then ``reserves`` (so money given back is available at once); returns each
    reservation (or why there is none: a hard budget's refusal, an unknown or suspended tenant)
    and, per finish, whether it changed anything."""
    # 1. Reservations being finished, locked, with the counters they hold.
    held: dict[str, tuple[str, int, int]] = {}
    holds_of: dict[str, list[Key]] = defaultdict(list)
    if finishes:
        ids = sorted({f.reservation_id for f in finishes})
        for row in connection.execute(_LOCK_RESERVATIONS, {"ids": ids}):
            held[row.id] = (row.status, row.cost_nanousd, row.tokens)
            if row.budget_id is not None:
                holds_of[row.id].append((row.budget_id, row.period_start))

    # 2. The tenants of new reservations, and the budgets that apply to each.
    tenant_status: dict[str, str] = {}
    budgets_of: dict[str, list[_Applicable]] = defaultdict(list)
    if reserves:
        tenants = sorted({r.tenant_id for r in reserves})
        for row in connection.execute(_TENANT_BUDGETS, {"tenants": tenants}):
            tenant_status[row.tenant] = row.tenant_status
            if row.id is not None:
                budget = Budget.from_row(row)
                key = (budget.id, period_start(budget.period, now))
                hard = budget.mode is BudgetMode.HARD
                budgets_of[row.tenant].append(_Applicable(budget, key, row.limit_nanousd, row.limit_tokens, hard))
        for entries in budgets_of.values():
            entries.sort(key=lambda entry: (entry.budget.pipeline or "", entry.budget.period))
    applicable = [
        [e for e in budgets_of.get(r.tenant_id, ()) if e.budget.pipeline is None or e.budget.pipeline == r.pipeline]
        for r in reserves
    ]

    # 3. Lock (and read) the counters. Reservations need their values; finishes only change them
    # by deltas, so on SQLite (whose write lock is already held) they are not read at all.
    reserve_keys = {entry.key for entries in applicable for entry in entries}
    lock_keys = set(reserve_keys)
    if db.dialect != "sqlite":
        lock_keys.update(*holds_of.values())
    counters: dict[Key, _Counter] = {}
    if lock_keys:
        counters = _lock_counters(connection, lock_keys)
        missing = sorted(reserve_keys - counters.keys())
        if missing:  # the first reservation of a period: create its counters, then lock them
            connection.execute(
                db.insert_ignoring_conflicts(BudgetCounterRow, "budget_id", "period_start"),
                [
                    {"budget_id": budget_id, "period_start": start, "spent_nanousd": 0, "reserved_nanousd": 0,
                     "spent_tokens": 0, "reserved_tokens": 0}
                    for budget_id, start in missing
                ],
            )  # fmt: skip
            counters.update(_lock_counters(connection, set(missing)))
    deltas: dict[Key, _Counter] = defaultdict(_Counter)

    def change(key: Key, spent: int, reserved: int, spent_tokens: int, reserved_tokens: int) -> None:
        deltas[key].add(spent, reserved, spent_tokens, reserved_tokens)
        if key in counters:
            counters[key].add(spent, reserved, spent_tokens, reserved_tokens)

    # 4. Finishes, in order; a reservation is finished once (a repeat changes nothing).
    finished: list[bool] = []
    status_updates: list[dict[str, object]] = []
    for finish in finishes:
        state = held.get(finish.reservation_id)
        if (
            state is None
            or state[0] in _FINISHED
            or (state[0] == ReservationStatus.EXPIRED and finish.action != "settle")
        ):
            finished.append(False)
            continue
        status, cost, tokens = state
        still_reserved = status == ReservationStatus.ACTIVE
        settle = finish.action == "settle"
        for key in holds_of.get(finish.reservation_id, ()):
            change(
                key,
                finish.cost_nanousd if settle else 0,
                -cost if still_reserved else 0,
                finish.tokens if settle else 0,
                -tokens if still_reserved else 0,
            )
        new_status = _STATUS_OF_ACTION[finish.action]
        held[finish.reservation_id] = (new_status, cost, tokens)
        status_updates.append(
            {
                "k_id": finish.reservation_id,
                "v_status": new_status,
                "v_finished": now,
                "v_settled": finish.cost_nanousd if settle else None,
                "v_settled_tokens": finish.tokens if settle else None,
            }
        )
        finished.append(True)

    # 5. New reservations, in order: all of a reservation's hard budgets must have room.
    results: list[Reservation | PulseAIError] = []
    reservation_rows: list[dict[str, object]] = []
    hold_rows: list[dict[str, object]] = []
    for request, entries in zip(reserves, applicable, strict=True):
        cost, tokens = request.cost_nanousd, request.tokens
        tenant_state = tenant_status.get(request.tenant_id)
        if tenant_state != TenantStatus.ACTIVE.value:
            results.append(
                NotFoundError(f"no tenant {request.tenant_id!r}")
                if tenant_state is None
                else TenantSuspendedError(request.tenant_id)
            )
            continue
        refusal: BudgetExceededError | None = None
        crossed: list[_Applicable] = []
        for entry in entries:
            counter = counters[entry.key]
            over = (
                entry.limit_nanousd is not None and counter.spent + counter.reserved + cost > entry.limit_nanousd
            ) or (
                entry.limit_tokens is not None
                and counter.spent_tokens + counter.reserved_tokens + tokens > entry.limit_tokens
            )
            if over and entry.hard:
                refusal = _refusal(request, entry.budget, entry.key[1], counter)
                break
            if over:
                crossed.append(entry)
        if refusal is not None:
            results.append(refusal)
            continue
        expires_at = now + timedelta(seconds=request.ttl_s)
        reservation_id = new_id()
        for entry in entries:
            change(entry.key, 0, cost, 0, tokens)
        soft = tuple(counters[entry.key].status(entry.budget, entry.key[1]) for entry in crossed)
        holds = tuple(BudgetHold(*entry.key) for entry in entries)
        results.append(
            Reservation(
                reservation_id, request.tenant_id, request.pipeline, nano_to_usd(cost), tokens, expires_at, holds, soft
            )
        )
        if holds:
            reservation_rows.append(
                {
                    "id": reservation_id,
                    "tenant_id": request.tenant_id,
                    "pipeline": request.pipeline,
                    "cost_nanousd": cost,
                    "tokens": tokens,
                    "status": ReservationStatus.ACTIVE.value,
                    "created_at": now,
                    "expires_at": expires_at,
                }
            )
            hold_rows.extend(
                {"reservation_id": reservation_id, "budget_id": h.budget_id, "period_start": h.period_start}
                for h in holds
            )

    # 6. Write: counters by their deltas (in lock order), then the reservations.
    changes = [
        {
            "k_budget": key[0],
            "k_period": key[1],
            "d_spent": delta.spent,
            "d_reserved": delta.reserved,
            "d_spent_tokens": delta.spent_tokens,
            "d_reserved_tokens": delta.reserved_tokens,
        }
        for key, delta in sorted(deltas.items())
        if delta.spent or delta.reserved or delta.spent_tokens or delta.reserved_tokens
    ]
    if changes:
        connection.execute(_COUNTER_DELTA, changes)
    if status_updates:
        connection.execute(_FINISH, status_updates)
    if reservation_rows:
        connection.execute(_INSERT_RESERVATIONS, reservation_rows)
        connection.execute(_INSERT_HOLDS, hold_rows)
    return results, finished


def _lock_counters(connection: Connection, keys: set[Key]) -> dict[Key, _Counter]:
    rows = connection.execute(
        _LOCK_COUNTERS, {"budgets": sorted({k[0] for k in keys}), "periods": sorted({k[1] for k in keys})}
    )
    return {
        (r.budget_id, r.period_start): _Counter(r.spent_nanousd, r.reserved_nanousd, r.spent_tokens, r.reserved_tokens)
        for r in rows
        if (r.budget_id, r.period_start) in keys
    }


def _refusal(request: ReserveRequest, budget: Budget, start: date, counter: _Counter) -> BudgetExceededError:
    money = budget.limit_usd is not None
    tokens = budget.limit_tokens is not None
    return BudgetExceededError(
        tenant_id=request.tenant_id,
        scope=budget.pipeline or "all",
        period=budget.period.value,
        period_start=start.isoformat(),
        limit_usd=budget.limit_usd if money else None,
        spent_usd=nano_to_usd(counter.spent) if money else None,
        reserved_usd=nano_to_usd(counter.reserved) if money else None,
        requested_usd=nano_to_usd(request.cost_nanousd) if money else None,
        limit_tokens=budget.limit_tokens if tokens else None,
        spent_tokens=counter.spent_tokens if tokens else None,
        reserved_tokens=counter.reserved_tokens if tokens else None,
        requested_tokens=request.tokens if tokens else None,
    )
