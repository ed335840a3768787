from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pulse_ai.cli import app
from tests.fakes.openai_server import FakeOpenAIServer, Fault

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_config_validate_accepts_the_example() -> None:
    result = runner.invoke(app, ["config", "validate", str(REPO / "examples" / "pulse-ai.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "summarize" in result.output


def test_config_validate_refuses_a_bad_file_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  oa: {type: openai, api_key: sk-hidden-777, timeout: nope, models: [{name: gpt-4o}]}\n"
    )
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml" in result.output and "providers.oa.timeout" in result.output
    assert "sk-hidden-777" not in result.output


BAD_FILES: dict[str, bytes] = {
    "deep-sequences": b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep-mappings": b"".join(b"  " * depth + b"k%d:\n" % depth for depth in range(500)) + b"  " * 500 + b"x\n",
    "latin-1": "providers:\n  oa: {type: openai, api_key: sk-hidden-777, models: [{name: café}]}\n".encode("latin-1"),
    "utf-16": "providers: {}\n".encode("utf-16"),
    "alias-bomb": b"a: &a [x, x, x, x, x, x, x, x, x]\n"
    + b"".join(b"%c: &%c [%s]\n" % (ord(c), ord(c), b", ".join([b"*" + bytes([ord(c) - 1])] * 9)) for c in "bcdefghi"),
    "duplicate-keys": b"providers:\n  oa: {type: openai, api_key: sk-hidden-777, models: [{name: gpt-4o}]}\n"
    b"  oa: {type: openai, api_key: sk-hidden-777, models: [{name: gpt-4o}]}\n",
    "syntax": b"providers: [unclosed\n",
    "control-character": b"providers: {oa: \x07}\n",
    "tag": b"providers:\n  oa: {type: openai, api_key: !sk-hidden-777, models: [{name: gpt-4o}]}\n",
    "int-tag": b"providers:\n  oa: {type: openai, api_key: sk-12345, max_retries: !!int sk-hidden-777,"
    b" models: [{name: x}]}\n",
    "huge-int": b"version: " + b"7" * 5000 + b"\n",
    "unterminated-variable": b"providers:\n  oa: {type: openai, api_key: 'sk-hidden-777${X', models: [{name: x}]}\n",
    "empty": b"",
    "directory": b"",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_config_validate_reports_every_bad_file_on_one_line(tmp_path: Path, kind: str) -> None:
    bad = tmp_path / f"{kind}.yaml"
    if kind == "directory":
        bad.mkdir()
    else:
        bad.write_bytes(BAD_FILES[kind])
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped traceback
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), result.output
    assert "internal error" not in result.output  # diagnosed, not caught by the safety net
    assert "sk-hidden-777" not in result.output and "777" * 3 not in result.output


def test_config_validate_never_shows_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Path) -> None:
        raise ValueError("invalid literal for int() with base 10: 'sk-hidden-777'")

    monkeypatch.setattr("pulse_ai.cli.load_config", broken)
    result = runner.invoke(app, ["config", "validate", str(tmp_path / "any.yaml")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.splitlines() == [
        f"error: {tmp_path / 'any.yaml'}: internal error while checking it (ValueError); please report it"
    ]


def test_demo_embeds_indexes_and_searches_two_tenants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default store lives in ./data/vectors
    first = runner.invoke(app, ["demo"])
    assert first.exit_code == 0, first.output
    assert "local/all-MiniLM-L6-v2" in first.output
    assert "closest [1]" in first.output.splitlines()[2]  # the two checkout paraphrases find each other
    assert "acme-shop/issues: 8 records -> new 8, updated 0, unchanged 0, failed 0; stored 8" in first.output
    assert "no hit crossed tenants" in first.output
    acme_lines = [line for line in first.output.splitlines() if line.strip().startswith("acme-shop ")]
    assert acme_lines and all("GLX" not in line and "glx" not in line for line in acme_lines)
    assert (tmp_path / "data" / "vectors").is_dir()

    second = runner.invoke(app, ["demo"])
    assert "acme-shop/issues: 8 records -> new 0, updated 0, unchanged 8, failed 0; stored 8" in second.output


def test_embed_prints_json_vectors() -> None:
    result = runner.invoke(app, ["embed", "hello world", "another text"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["dimensions"] == 384 and len(payload["vectors"]) == 2


def _config(tmp_path: Path, fake: FakeOpenAIServer) -> Path:
    path = tmp_path / "conf.yaml"
    path.write_text(
        f"""
providers:
  oa: {{type: openai, api_key: sk-cli-key, base_url: '{fake.base_url}', max_retries: 0,
        models: [{{name: text-embedding-3-small, dimensions: 8}}, {{name: gpt-4o-mini}}]}}
  dead: {{type: openai, api_key: sk-dead-key, base_url: 'http://127.0.0.1:9/v1', max_retries: 0,
          models: [{{name: text-embedding-3-small, dimensions: 8}}]}}
pipelines:
  embedding: {{kind: embedding, candidates: [dead/text-embedding-3-small, oa/text-embedding-3-small]}}
  broken: {{kind: embedding, candidates: [dead/text-embedding-3-small]}}
"""
    )
    return path


def test_providers_check_prints_a_table_and_fails_on_a_dead_pipeline(tmp_path: Path, fake: FakeOpenAIServer) -> None:
    result = runner.invoke(app, ["providers", "check", "--config", str(_config(tmp_path, fake))])
    assert result.exit_code == 1
    assert "no healthy candidate in: broken" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("embedding")]
    assert any("dead" in line and "FAILED" in line for line in lines)
    assert any(" oa " in line and " ok " in line for line in lines)


def test_providers_check_passes_when_every_pipeline_has_a_healthy_candidate(
    tmp_path: Path, fake: FakeOpenAIServer
) -> None:
    path = _config(tmp_path, fake)
    path.write_text(
        path.read_text().replace("  broken: {kind: embedding, candidates: [dead/text-embedding-3-small]}\n", "")
    )
    result = runner.invoke(app, ["providers", "check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    fake.always(Fault.http(500))
    result = runner.invoke(app, ["providers", "check", "--config", str(path)])
    assert result.exit_code == 1
