"""The command line: thin, over the same facade as the Python API."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pulse_ai import cli_admin, cli_service
from pulse_ai.cli_cache import app as cache_app
from pulse_ai.cli_vectors import app as vectors_app
from pulse_ai.client import PulseAI
from pulse_ai.config import load_config
from pulse_ai.errors import PulseAIError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="pulse-ai: embeddings, generation, routing.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration files.")
providers_app = typer.Typer(no_args_is_help=True, help="Configured providers.")
models_app = typer.Typer(no_args_is_help=True, help="Local models.")
app.add_typer(config_app, name="config")
app.add_typer(providers_app, name="providers")
app.add_typer(models_app, name="models")
app.add_typer(vectors_app, name="vectors")
app.add_typer(cache_app, name="cache")
app.add_typer(cli_admin.db_app, name="db")
app.add_typer(cli_admin.tenants_app, name="tenants")
app.add_typer(cli_admin.keys_app, name="keys")
app.add_typer(cli_admin.budgets_app, name="budgets")
app.add_typer(cli_admin.usage_app, name="usage")
app.add_typer(cli_admin.credentials_app, name="credentials")
app.command("serve")(cli_service.serve)
app.command("index")(cli_service.index)
app.command("search")(cli_service.search)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="A YAML configuration (default: the offline one).")
]


def _client(config: Path | None) -> PulseAI:
    return PulseAI.from_config(config) if config else PulseAI.default()


def _fail(error: PulseAIError) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=1)


@config_app.command("validate")
def config_validate(file: Path) -> None:
    """Exit 0 when FILE is a valid configuration; otherwise print what is wrong and exit 1."""
    try:
        loaded = load_config(file)
    except PulseAIError as error:
        _fail(error)
        return
    except Exception as error:  # a loader bug: still one line, and no message that might quote a value
        typer.echo(
            f"error: {file}: internal error while checking it ({type(error).__name__}); please report it", err=True
        )
        raise typer.Exit(code=1) from None
    pipelines = ", ".join(sorted(loaded.config.pipelines)) or "none"
    typer.echo(f"{file}: valid ({len(loaded.models)} models, pipelines: {pipelines})")


@providers_app.command("check")
def providers_check(config: ConfigOption = None) -> None:
    """Make a cheap real call to every configured model; exit 1 if a pipeline has no healthy candidate."""

    async def run() -> dict[str, list[tuple[str, str, bool, float, str | None]]]:
        async with _client(config) as ai:
            report = await ai.check_providers()
        return {
            name: [(s.provider, s.model, s.healthy, s.latency_ms, s.error) for s in statuses]
            for name, statuses in report.items()
        }

    try:
        report = asyncio.run(run())
    except PulseAIError as error:
        _fail(error)
        return
    typer.echo(f"{'pipeline':<18} {'provider':<12} {'model':<26} {'status':<8} {'latency':>9}  error")
    unhealthy = []
    for pipeline, rows in report.items():
        for provider, model, healthy, latency, problem in rows:
            status = "ok" if healthy else "FAILED"
            typer.echo(
                f"{pipeline or '-':<18} {provider:<12} {model:<26} {status:<8} {latency:>7.0f}ms  {problem or ''}"
            )
        if pipeline and not any(healthy for _, _, healthy, _, _ in rows):
            unhealthy.append(pipeline)
    if unhealthy:
        typer.echo(f"no healthy candidate in: {', '.join(unhealthy)}", err=True)
        raise typer.Exit(code=1)


@models_app.command("prepare")
def models_prepare(config: ConfigOption = None) -> None:
    """Make (or check) the exports of every configured local model ahead of time; print what and where."""
    from pulse_ai.providers.local_prepare import prepare_local_models

    try:
        loaded = load_config(config) if config else None
        for line in prepare_local_models(loaded):
            typer.echo(line)
    except PulseAIError as error:
        _fail(error)


@app.command()
def embed(
    texts: list[str],
    config: ConfigOption = None,
    model: Annotated[str | None, typer.Option(help="provider/model")] = None,
    pipeline: Annotated[str | None, typer.Option(help="a pipeline name (default: embedding)")] = None,
) -> None:
    """Embed TEXTS and print one JSON object: model, vector space, usage and the vectors."""

    async def run() -> dict[str, object]:
        async with _client(config) as ai:
            result = await ai.embed(texts, model=model, pipeline=pipeline)
        return {
            "model": result.model,
            "vector_space": result.vector_space,
            "dimensions": result.dimensions,
            "truncated": result.truncated,
            "usage": {"input_tokens": result.usage.input_tokens, "cost_usd": str(result.usage.cost_usd)},
            "vectors": result.vectors.round(6).tolist(),
        }

    try:
        typer.echo(json.dumps(asyncio.run(run())))
    except PulseAIError as error:
        _fail(error)


@app.command()
def demo(config: ConfigOption = None) -> None:
    """The main job: embed, index two tenants' bundled records into the vector store, and search them."""
    from pulse_ai.demo import run_demo

    async def run() -> None:
        async with _client(config) as ai:
            await run_demo(ai, typer.echo)

    try:
        asyncio.run(run())
    except PulseAIError as error:
        _fail(error)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
