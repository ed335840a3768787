"""Money is exact: integer nano-dollars (1e-9 USD) in the database, ``Decimal`` USD in Python.

These two functions are the only place the two meet. Floats are refused: ``0.1`` is not a price.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = ["NANOS_PER_USD", "nano_to_usd", "usd_to_nano"]

NANOS_PER_USD = 1_000_000_000
_NANO = Decimal("1e-9")
_TOO_LARGE = Decimal("1e15")


def usd_to_nano(usd: Decimal | int | str) -> int:
    """USD -> integer nano-dollars, rounded half up to the nano (``Decimal("0.0000000005")`` -> 1)."""
    if isinstance(usd, bool) or not isinstance(usd, (Decimal, int, str)):
        raise TypeError(f"an amount of money must be a Decimal, an int or a str, not {type(usd).__name__}")
    try:
        amount = Decimal(usd)
    except InvalidOperation:
        raise ValueError(f"not an amount of money: {usd!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not an amount of money: {usd!r}")
    if abs(amount) >= _TOO_LARGE:  # quantize would overflow the context's precision
        raise ValueError(f"{str(usd)[:40]} USD is beyond any amount pulse-ai accounts for")
    return int(amount.quantize(_NANO, rounding=ROUND_HALF_UP).scaleb(9))


def nano_to_usd(nanos: int) -> Decimal:
    """Integer nano-dollars -> USD, exact (``1`` -> ``Decimal("1E-9")``)."""
    return Decimal(int(nanos)).scaleb(-9)
