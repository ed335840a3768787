"""``pulse-ai vectors ...``: the embedded store's health (which collections are damaged, how to rebuild)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pulse_ai.config import load_config
from pulse_ai.errors import PulseAIError
from pulse_ai.vectors.check import CollectionCheck, check_store

app = typer.Typer(no_args_is_help=True, help="The vector store.")


@app.command("check")
def check(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A YAML configuration.")] = None,
    path: Annotated[Path | None, typer.Option(help="An embedded store's directory (instead of --config).")] = None,
) -> None:
    """Open every collection of the embedded store and say, one line each, which are damaged and
    how to rebuild them; exit 1 when any directory needs an operator. The store must not be in use
    (it has one owner at a time)."""
    try:
        if path is None:
            settings = load_config(config).config.vector_store if config else None
            if settings is not None and settings.backend != "embedded":
                typer.echo("the qdrant backend keeps its own integrity; nothing to check here")
                return
            path = Path(settings.path if settings and settings.path else "./data/vectors")
        results: list[CollectionCheck] = check_store(path)
    except PulseAIError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    problems = [result for result in results if not result.ok]
    for result in results:
        typer.echo(f"{result.label:<8} {result.name}  {result.detail}")
    to_rebuild = [result for result in problems if result.rebuild]
    if to_rebuild:
        typer.echo("\nto rebuild a damaged collection:", err=True)
        for result in to_rebuild:
            typer.echo(f"  {result.rebuild}", err=True)
    if problems:
        raise typer.Exit(code=1)
    typer.echo(f"{len(results)} collections, none damaged")
