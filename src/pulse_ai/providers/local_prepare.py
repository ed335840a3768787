"""``pulse-ai models prepare``: every configured local model loaded once, so that its export (when its
backend needs one) is made, self-tested and kept in the cache before the first request."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pulse_ai.catalog import resolve_backend
from pulse_ai.config import LoadedConfig, SentenceTransformersConfig, load_config_text
from pulse_ai.providers.local import load_default_model, load_sentence_transformer, resolve_model_path
from pulse_ai.providers.local_export import MANIFEST, default_cache_dir, export_dir_for

__all__ = ["prepare_local_models"]


def _default_config() -> LoadedConfig:
    from pulse_ai.client import DEFAULT_CONFIG

    text = resources.files("pulse_ai").joinpath("examples", DEFAULT_CONFIG).read_text(encoding="utf-8")
    return load_config_text(text, source=f"pulse_ai/examples/{DEFAULT_CONFIG}")


def prepare_local_models(loaded: LoadedConfig | None = None) -> list[str]:
    """One line per local model: its backend and precision, and the export made or reused (and where)."""
    loaded = loaded or _default_config()
    lines = []
    for spec in loaded.models.values():
        provider = loaded.config.providers[spec.provider]
        if not isinstance(provider, SentenceTransformersConfig):
            continue
        backend, precision = resolve_backend(spec.backend, spec.precision)
        source = resolve_model_path(spec)
        cache_dir = Path(provider.cache_dir).expanduser() if provider.cache_dir else default_cache_dir()
        target = export_dir_for(source, backend, precision, cache_dir)
        before = _manifest_time(target)
        note = ""
        if spec.default_backend:
            _, _, choice = load_default_model(source, provider.device, cache_dir)
            note = (
                " (the default)"
                if choice.reason is None
                else f" (the default {backend} {precision} cannot run: {choice.reason})"
            )
            backend, precision = choice.backend, choice.precision
        else:
            load_sentence_transformer(source, provider.device, backend, precision, cache_dir)
        if backend == "torch":
            lines.append(f"{spec.ref}: {backend} {precision}{note}, nothing to export (runs {source})")
            continue
        reused = before is not None and before == _manifest_time(target)
        state = "checked, reused" if reused else "made, self-tested"
        lines.append(f"{spec.ref}: {backend} {precision}{note}, {state}: {target}")
    if not lines:
        lines.append("no local models in this configuration")
    return lines


def _manifest_time(export: Path) -> int | None:
    try:
        return (export / MANIFEST).stat().st_mtime_ns
    except OSError:
        return None
