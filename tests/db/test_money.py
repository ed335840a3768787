from decimal import Decimal

import pytest

from pulse_ai.db.money import nano_to_usd, usd_to_nano


def test_usd_to_nano_rounds_half_up_to_the_nano() -> None:
    assert usd_to_nano(Decimal("0.0000000005")) == 1
    assert usd_to_nano(Decimal("0.0000000004999")) == 0
    assert usd_to_nano(Decimal("1.23")) == 1_230_000_000
    assert usd_to_nano(Decimal("-0.0000000015")) == -2  # half away from zero
    assert usd_to_nano(3) == 3_000_000_000
    assert usd_to_nano("0.00002") == 20_000


def test_round_trip_is_exact() -> None:
    for nanos in (0, 1, 999_999_999, 10**18 + 7):
        assert usd_to_nano(nano_to_usd(nanos)) == nanos
    assert nano_to_usd(1) == Decimal("0.000000001")


def test_floats_and_nonsense_are_refused() -> None:
    with pytest.raises(TypeError):
        usd_to_nano(0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        usd_to_nano(True)
    with pytest.raises(ValueError):
        usd_to_nano("ten dollars")
    with pytest.raises(ValueError):
        usd_to_nano(Decimal("NaN"))
