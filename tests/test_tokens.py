"""Exact token counts for OpenAI models from the shipped encodings; the estimate only as fallback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import tiktoken_ext.openai_public as openai_public
from tiktoken._educational import SimpleBytePairEncoding

from pulse_ai import tokens
from pulse_ai.catalog import default_catalog
from pulse_ai.config import load_config_text
from pulse_ai.tokens import ENCODINGS, count_many, count_tokens, encoding, estimate_tokens, token_ceiling

SAMPLE = [
    "hello world",
    "tiktoken is great!",
    "Ünïcödé façade — naïve café, “quotes” and ½ fractions",
    "emoji: 🚀🔥👩🏽‍💻 and flags 🇫🇷🇯🇵, a family 👨‍👩‍👧‍👦",
    "日本語の文章を数えます。中文分词测试。한국어 텍스트.",
    "def f(x: int) -> int:\n    return {'a': x ** 2}[\"a\"]  # comment\n\tif x != 0: pass\r\n",
    "    leading spaces, trailing tabs\t\t\n\n\n",
    "numbers 1234567890 3.14159 -42 0xFF 1e-9",
    "special-token text <|endoftext|> counts as plain text",
    "Ω≈ç√∫˜µ≤≥÷ åß∂ƒ©˙∆˚¬… Zalgo: Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
]
LONG = (
    "The quarterly report shows revenue up 12% to $4.2M; see https://example.com/q3?x=1&y=2. " * 150
    + "数据库迁移失败，回滚到上一个版本。" * 60
    + "\n".join(f"    result_{i} = compute(value_{i}, factor={i * 0.5})" for i in range(120))
)


def reference_encodings() -> dict[str, dict[str, Any]]:
    """tiktoken's own definition of each encoding (split pattern, special tokens), read without its
    download: the loader is swapped for one returning no ranks."""
    original = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda *args, **kwargs: {}  # type: ignore[assignment]
    try:
        return {name: getattr(openai_public, name)() for name in ENCODINGS}
    finally:
        openai_public.load_tiktoken_bpe = original


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_shipped_encodings_match_tiktokens_definitions(name: str) -> None:
    reference = reference_encodings()[name]
    bpe = encoding(name)
    assert bpe._pat_str == reference["pat_str"]
    assert bpe._special_tokens == reference["special_tokens"]
    assert bpe.n_vocab == max(reference["special_tokens"].values()) + 1


def test_known_token_ids() -> None:
    # published examples: tiktoken's README and OpenAI's cookbook
    assert encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert encoding("cl100k_base").encode("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert encoding("o200k_base").encode("hello world") == [24912, 2375]


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_counts_equal_the_reference_bpe_on_unicode_emoji_cjk_and_code(name: str) -> None:
    """tiktoken's pure-Python reference implementation, on the same ranks, gives the same tokens."""
    bpe = encoding(name)
    reference = SimpleBytePairEncoding(pat_str=bpe._pat_str, mergeable_ranks=bpe._mergeable_ranks)
    for text in [*SAMPLE, LONG]:
        expected = reference.encode(text, visualise=None)
        assert bpe.encode_ordinary(text) == expected
        assert count_tokens(text, name) == len(expected)
        assert bpe.decode(expected) == text


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_token_ceiling_stays_a_bound_of_the_exact_count(name: str) -> None:
    for text in [*SAMPLE, LONG]:
        assert token_ceiling([text]) >= count_tokens(text, name)


def test_catalog_names_each_openai_models_encoding() -> None:
    catalog = default_catalog()
    expected = {
        "text-embedding-3-small": "cl100k_base",
        "text-embedding-3-large": "cl100k_base",
        "text-embedding-ada-002": "cl100k_base",
        "gpt-4o": "o200k_base",
        "gpt-4o-mini": "o200k_base",
        "gpt-4.1": "o200k_base",
        "gpt-4.1-mini": "o200k_base",
    }
    for model, name in expected.items():
        entry = catalog.get(model)
        assert entry is not None and entry.encoding == name, model
    local = catalog.get("all-MiniLM-L6-v2")
    assert local is not None and local.encoding is None  # counted by its own tokenizer


def test_unknown_gateway_model_falls_back_to_the_estimate_and_can_declare_an_encoding() -> None:
    config = load_config_text(
        """
providers:
  gateway:
    type: custom_gateway
    base_url: http://gateway.invalid/v1
    models:
      - {name: llama-3.1-70b, capabilities: [generation], max_input_tokens: 8000, max_output_tokens: 1000,
         input_price_per_million: 1, output_price_per_million: 1}
      - {name: my-4o, capabilities: [generation], max_input_tokens: 8000, max_output_tokens: 1000,
         input_price_per_million: 1, output_price_per_million: 1, encoding: o200k_base}
  azure:
    type: azure_openai
    endpoint: https://example.invalid
    api_key: sk-test-not-a-real-key-0000
    api_version: "2024-10-21"
    models: [{name: text-embedding-3-small, deployment: emb-small}]
"""
    )
    specs = config.models
    assert specs["gateway/llama-3.1-70b"].encoding is None
    assert specs["gateway/my-4o"].encoding == "o200k_base"
    assert specs["azure/text-embedding-3-small"].encoding == "cl100k_base"
    text = "Ünïcödé and 日本語"
    assert count_tokens(text, None) == estimate_tokens(text)


async def test_large_batches_are_counted_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    offloaded: list[int] = []
    real_to_thread = asyncio.to_thread

    async def recording_to_thread(func: Any, /, *args: Any) -> Any:
        offloaded.append(len(args[0]))
        return await real_to_thread(func, *args)

    monkeypatch.setattr(tokens.asyncio, "to_thread", recording_to_thread)
    encoding("cl100k_base")  # loaded: small inputs stay on the loop
    small = await count_many(SAMPLE, "cl100k_base")
    assert offloaded == []
    big = [LONG] * 10
    counted = await count_many(big, "cl100k_base")
    assert offloaded == [10]
    assert small == [count_tokens(t, "cl100k_base") for t in SAMPLE]
    assert counted == [count_tokens(LONG, "cl100k_base")] * 10
