from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pulse_ai.providers.base import plan_batches
from pulse_ai.tokens import estimate_tokens


@given(
    counts=st.lists(st.integers(min_value=1, max_value=500), max_size=300),
    max_inputs=st.integers(min_value=1, max_value=64),
    max_tokens=st.one_of(st.none(), st.integers(min_value=1, max_value=2000)),
)
def test_plan_covers_every_input_once_in_order_within_limits(
    counts: list[int], max_inputs: int, max_tokens: int | None
) -> None:
    batches = plan_batches(counts, max_inputs, max_tokens)
    covered = [i for start, end in batches for i in range(start, end)]
    assert covered == list(range(len(counts)))
    for start, end in batches:
        assert 1 <= end - start <= max_inputs
        if max_tokens is not None and end - start > 1:
            assert sum(counts[start:end]) <= max_tokens


def test_token_estimate_errs_high_for_english() -> None:
    # OpenAI's tokenizer gives 10 tokens for this sentence; the estimate must not be lower.
    assert estimate_tokens("The quick brown fox jumps over the lazy dog.") >= 10
    assert estimate_tokens("数据库连接") == 5
    assert estimate_tokens("x") == 1
