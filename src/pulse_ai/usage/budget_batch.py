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
_LOCK_RESERVATIONS = (
    select(ReservationRow.id, ReservationRow.status, ReservationRow.cost_nanousd, ReservationRow.tokens)
    .where(ReservationRow.id.in_(bindparam("ids", expanding=True)))
    .order_by(ReservationRow.id)
    .with_for_update()
)
_HOLDS = select(ReservationHoldRow.reservation_id, ReservationHoldRow.budget_id, ReservationHoldRow.period_start).where(
    ReservationHoldRow.reservation_id.in_(bindparam("ids", expanding=True))
)
_TENANTS = select(TenantRow.id, TenantRow.status).where(TenantRow.id.in_(bindparam("tenants", expanding=True)))
_BUDGETS = select(BudgetRow.__table__).where(BudgetRow.tenant_id.in_(bindparam("tenants", expanding=True)))
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
    __slots__ = ("reserved", "reserved_tokens", "spent", "spent_tokens")

    def __init__(self, spent: int, reserved: int, spent_tokens: int, reserved_tokens: int) -> None:
        self.spent, self.reserved, self.spent_tokens, self.reserved_tokens = (
            spent,
            reserved,
            spent_tokens,
            reserved_tokens,
        )

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
        held = {
            r.id: (r.status, r.cost_nanousd, r.tokens) for r in connection.execute(_LOCK_RESERVATIONS, {"ids": ids})
        }
        for hold in connection.execute(_HOLDS, {"ids": ids}):
            holds_of[hold.reservation_id].append((hold.budget_id, hold.period_start))

    # 2. The budgets that apply to each new reservation, and their counters for this period. A
    # tenant that does not exist or is suspended gets no reservation (so no call).
    applicable: list[list[_Applicable]] = []
    tenant_status: dict[str, str] = {}
    if reserves:
        budgets_of: dict[str, list[_Applicable]] = defaultdict(list)
        tenants = sorted({r.tenant_id for r in reserves})
        tenant_status = {row.id: row.status for row in connection.execute(_TENANTS, {"tenants": tenants})}
        for row in connection.execute(_BUDGETS, {"tenants": tenants}):
            budget = Budget.from_row(row)
            key = (budget.id, period_start(budget.period, now))
            budgets_of[row.tenant_id].append(
                _Applicable(budget, key, row.limit_nanousd, row.limit_tokens, budget.mode is BudgetMode.HARD)
            )
        for entries in budgets_of.values():
            entries.sort(key=lambda entry: (entry.budget.pipeline or "", entry.budget.period))
        for request in reserves:
            applicable.append(
                [
                    entry
                    for entry in budgets_of.get(request.tenant_id, ())
                    if entry.budget.pipeline is None or entry.budget.pipeline == request.pipeline
                ]
            )
    new_keys = sorted({entry.key for entries in applicable for entry in entries})
    if new_keys:
        connection.execute(
            db.insert_ignoring_conflicts(BudgetCounterRow, "budget_id", "period_start"),
            [
                {
                    "budget_id": budget_id,
                    "period_start": start,
                    "spent_nanousd": 0,
                    "reserved_nanousd": 0,
                    "spent_tokens": 0,
                    "reserved_tokens": 0,
                }
                for budget_id, start in new_keys
            ],
        )
    all_keys = set(new_keys).union(*holds_of.values())
    counters: dict[Key, _Counter] = {}
    if all_keys:
        rows = connection.execute(
            _LOCK_COUNTERS,
            {"budgets": sorted({k[0] for k in all_keys}), "periods": sorted({k[1] for k in all_keys})},
        )
        for r in rows:
            counters[(r.budget_id, r.period_start)] = _Counter(
                r.spent_nanousd, r.reserved_nanousd, r.spent_tokens, r.reserved_tokens
            )
    before = {key: (c.spent, c.reserved, c.spent_tokens, c.reserved_tokens) for key, c in counters.items()}

    # 3. Finishes, in order; a reservation is finished once (a repeat changes nothing).
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
            counter = counters.get(key)
            if counter is None:
                continue
            if still_reserved:
                counter.reserved -= cost
                counter.reserved_tokens -= tokens
            if settle:
                counter.spent += finish.cost_nanousd
                counter.spent_tokens += finish.tokens
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

    # 4. New reservations, in order: all of a reservation's hard budgets must have room.
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
            counter = counters[entry.key]
            counter.reserved += cost
            counter.reserved_tokens += tokens
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

    # 5. Write: counters by their deltas (in lock order), then the reservations.
    deltas = []
    for key in sorted(counters):
        counter, (spent, reserved, spent_tokens, reserved_tokens) = counters[key], before[key]
        delta = (
            counter.spent - spent,
            counter.reserved - reserved,
            counter.spent_tokens - spent_tokens,
            counter.reserved_tokens - reserved_tokens,
        )
        if any(delta):
            deltas.append(
                {
                    "k_budget": key[0],
                    "k_period": key[1],
                    "d_spent": delta[0],
                    "d_reserved": delta[1],
                    "d_spent_tokens": delta[2],
                    "d_reserved_tokens": delta[3],
                }
            )
    if deltas:
        connection.execute(_COUNTER_DELTA, deltas)
    if status_updates:
        connection.execute(_FINISH, status_updates)
    if reservation_rows:
        connection.execute(_INSERT_RESERVATIONS, reservation_rows)
        connection.execute(_INSERT_HOLDS, hold_rows)
    return results, finished


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
