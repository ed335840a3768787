from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulse_ai.providers.base import plan_batches
from pulse_ai.tokens import count_tokens, estimate_tokens, token_ceiling


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
    assert estimate_tokens("数据库连接") == 15  # one a UTF-8 byte: the most a byte-level BPE makes
    assert estimate_tokens("x") == 1


HOSTILE_FOR_AN_ESTIMATE = {
    "newlines": "\n" * 6_000,
    "spaces and tabs": " \t" * 3_000,
    "emoji": "🙂" * 2_000,
    "rare CJK": "\U00020000\U00020001\U00020002" * 300,
    "common CJK": "数据库连接" * 100,
    "code": "def f(x):\n    return {'a': [1, 2, 3]}\n" * 40,
    "accents": "Ünïcödé façade naïve " * 50,
    "prose": "The quick brown fox jumps over the lazy dog. " * 50,
}


@pytest.mark.parametrize("text", HOSTILE_FOR_AN_ESTIMATE.values(), ids=HOSTILE_FOR_AN_ESTIMATE.keys())
def test_the_estimate_is_never_below_a_real_encoding_nor_above_the_ceiling(text: str) -> None:
    """Billing falls back to the estimate when a gateway reports no usage: it must not undercount
    (whitespace runs and emoji once counted 1 token per 30,000 characters), and it stays within
    the bound budgets reserve."""
    estimate = estimate_tokens(text)
    assert estimate >= max(count_tokens(text, "cl100k_base"), count_tokens(text, "o200k_base"))
    assert estimate <= token_ceiling([text])
