"""The YAML layer under the configuration: bounded loading, duplicate keys, interpolation, error texts."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pulse_ai import ConfigError, load_config, load_config_text
from pulse_ai.config import interpolate

SECRET = "sk-very-secret-value-123"


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail (rather than hang the suite) when the body runs away; the bound itself is asserted separately."""

    def expire(signum: int, frame: object) -> None:
        raise AssertionError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _refused(text: str, source: str = "conf.yaml", environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source=source, environ=environ or {})
    message = str(info.value)
    assert "\n" not in message
    return message


def _provider(extra: str = "") -> str:
    return f"providers:\n  local: {{type: sentence_transformers, models: [{{name: all-MiniLM-L6-v2}}]{extra}}}\n"


# --- 1. alias bombs and size bounds -------------------------------------------------------------------------


def _laughs(levels: int, fanout: int) -> str:
    lines = ['l0: &l0 "${HOME:-lol}"']
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * fanout)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return _provider() + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("levels", "fanout"),
    [
        (9, 9),  # the classic billion laughs: many aliases
        (16, 3),  # few aliases (45), but 3**15 nodes once expanded
    ],
)
def test_an_alias_bomb_fails_fast_before_interpolation(levels: int, fanout: int) -> None:
    text = _laughs(levels, fanout)
    assert len(text) < 1000
    started = time.perf_counter()
    with _deadline(10):
        message = _refused(text)
    assert time.perf_counter() - started < 1.0
    assert "conf.yaml" in message and ("alias" in message or "expand" in message)


def test_a_long_string_repeated_by_aliases_is_bounded_too() -> None:
    text = _provider() + "big: &big '" + "}$" * 100_000 + "'\nmany: [" + ", ".join(["*big"] * 60) + "]\n"
    assert len(text) < 256 * 1024
    started = time.perf_counter()
    with _deadline(20):
        message = _refused(text)
    assert time.perf_counter() - started < 1.0
    assert "many[" in message and "expands to more than" in message


def test_a_recursive_alias_is_refused() -> None:
    message = _refused(_provider() + "loop: &loop [*loop]\n")
    assert "loop" in message and "recursive" in message


def test_merge_keys_override_without_counting_as_duplicates() -> None:
    text = """
providers:
  a: &base {type: openai, api_key: sk-12345, timeout: 5, models: [{name: gpt-4o-mini}]}
  b: {<<: *base, timeout: 9}
"""
    loaded = load_config_text(text)
    assert loaded.config.providers["a"].timeout == 5
    assert loaded.config.providers["b"].timeout == 9


def test_a_large_text_is_refused_before_parsing() -> None:
    text = _provider() + "# " + "x" * 2_000_000 + "\n"
    started = time.perf_counter()
    message = _refused(text)
    assert time.perf_counter() - started < 1.0
    assert "too large" in message


def test_a_large_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(_provider() + "# " + "x" * 5_000_000 + "\n")
    with pytest.raises(ConfigError, match="too large") as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)


def test_many_small_nodes_are_bounded_too() -> None:
    message = _refused(_provider() + "items: [" + ", ".join(["1"] * 60_000) + "]\n")
    assert "nodes" in message


# --- 2. deep nesting and encodings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
        "a: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        "".join(f"{'  ' * depth}k{depth}:\n" for depth in range(200)) + "  " * 200 + "leaf\n",
    ],
    ids=["sequences", "flow-mappings", "block-mappings"],
)
def test_deep_nesting_is_a_config_error_naming_where(text: str) -> None:
    message = _refused(text)
    assert "nested deeper than 32 levels" in message and "line " in message


def test_nesting_through_aliases_is_bounded_too() -> None:
    lines = ["n0: &n0 [[[[[[[[[[1]]]]]]]]]]"]
    lines += [f"n{i}: &n{i} [[[[[[[[[[*n{i - 1}]]]]]]]]]]" for i in range(1, 8)]
    message = _refused(_provider() + "\n".join(lines) + "\n")
    assert "nested deeper than" in message


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(_provider().encode() + "x: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 .*line 3") as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)


def test_control_characters_are_a_config_error_with_a_line() -> None:
    message = _refused(_provider() + "x: a\x07b\n")
    assert "line 3" in message and "U+0007" in message


# --- 3. duplicate keys --------------------------------------------------------------------------------------


def test_a_provider_defined_twice_is_refused_with_both_lines() -> None:
    text = """providers:
  oa:
    type: openai
    api_key: sk-12345
    models: [{name: gpt-4o-mini}]
  oa:
    type: openai
    api_key: sk-123456
    models: [{name: gpt-4o}]
"""
    message = _refused(text)
    assert "conf.yaml: providers: duplicate key 'oa' (lines 2 and 6)" in message


def test_a_repeated_timeout_is_refused_with_its_path() -> None:
    text = (
        "providers:\n  oa: {type: openai, api_key: sk-12345, timeout: 5,\n"
        "       timeout: 50, models: [{name: gpt-4o-mini}]}\n"
    )
    message = _refused(text)
    assert "providers.oa: duplicate key 'timeout' (lines 2 and 3)" in message


def test_duplicate_keys_anywhere_are_refused() -> None:
    assert "duplicate key 'version'" in _refused("version: 1\n" + _provider() + "version: 1\n")
    text = _provider().replace("models:", "models: [{name: a, name: b}], old:")
    assert "duplicate key 'name'" in _refused(text)


# --- 4. interpolation ---------------------------------------------------------------------------------------


def test_nested_defaults_are_resolved() -> None:
    node = {"a": "${A:-${B}}", "b": "x-${A:-${B:-${C:-deep}}}-y"}
    assert interpolate(node, {"B": "sk-real"}, "s") == {"a": "sk-real", "b": "x-sk-real-y"}
    assert interpolate(node, {"A": "first"}, "s") == {"a": "first", "b": "x-first-y"}  # B never needed
    assert interpolate({"b": node["b"]}, {}, "s") == {"b": "x-deep-y"}
    with pytest.raises(ConfigError, match=r"s: a: environment variable B is not set"):
        interpolate(node, {}, "s")


def test_dollar_dollar_brace_is_a_literal() -> None:
    env = {"A": "value"}
    assert interpolate("$${A}", env, "s") == "${A}"
    assert interpolate("pre $${A} ${A}", env, "s") == "pre ${A} value"
    assert interpolate("${X:-$${A}}", env, "s") == "${A}"
    assert interpolate("cost $5, $$5, $", env, "s") == "cost $5, $$5, $"  # a lone $ is not special


def test_a_value_is_inserted_as_it_is_never_reinterpolated() -> None:
    assert interpolate("${A}", {"A": "${B}$${"}, "s") == "${B}$${"


@pytest.mark.parametrize(
    "template",
    ["${A", "${A:-${B}", "x ${A:-abc", "${}", "${1A}", "${A-default}", "${A:default}", "${A B}"],
)
def test_malformed_references_are_errors_naming_the_key_path(template: str) -> None:
    text = f'providers:\n  oa: {{type: openai, api_key: "{SECRET}{template}", models: [{{name: gpt-4o-mini}}]}}\n'
    message = _refused(text, environ={"A": SECRET, "B": SECRET})
    assert "conf.yaml: providers.oa.api_key:" in message
    assert "${" in message
    assert SECRET not in message


def test_interpolation_nesting_is_bounded() -> None:
    template = "${A:-" * 500 + "x" + "}" * 500
    with pytest.raises(ConfigError, match="nested"):
        interpolate(template, {}, "s", "k")


def test_interpolation_errors_never_show_values() -> None:
    env = {"KEY": SECRET}
    with pytest.raises(ConfigError) as info:
        interpolate({"k": "${KEY}${MISSING}"}, env, "s")
    assert "MISSING" in str(info.value) and SECRET not in str(info.value)


# --- 6. YAML errors say what is wrong ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("key: [unclosed", ["line 1, column 15", "expected ',' or ']'", "while parsing a flow sequence"]),
        ("a: b: c", ["line 1, column 5", "mapping values are not allowed here"]),
        ("a:\n\t- x", ["line 2, column 1", "cannot start any token"]),
        ("a: 'x", ["found unexpected end of stream", "while scanning a quoted scalar"]),
    ],
)
def test_yaml_syntax_errors_name_the_problem(text: str, fragments: list[str]) -> None:
    message = _refused(text)
    assert "not valid YAML" in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "line",
    [
        f"    api_key: !{SECRET}",  # a value that starts with `!` is read as a tag
        f"    api_key: *{SECRET}",  # ... with `*` as an alias
        f"    api_key: !!int {SECRET}",
        "    timeout: !!float not-a-number",
        "    max_retries: " + "9" * 5000,  # beyond Python's int-from-string digit limit
        "    organization: !!timestamp 2024-13-45",
    ],
)
def test_values_yaml_cannot_construct_are_config_errors_without_the_value(line: str) -> None:
    text = f"providers:\n  oa:\n    type: openai\n{line}\n    models: [{{name: gpt-4o-mini}}]\n"
    message = _refused(text)
    assert "line 4" in message
    assert SECRET not in message and "9" * 50 not in message


@pytest.mark.parametrize(
    "value",
    [
        f"!!timestamp {SECRET}",  # PyYAML's constructor: AttributeError
        f"!!bool {SECRET}",  # ... KeyError
        "!!timestamp garbage",
        "!!bool abc",
    ],
)
def test_every_value_yaml_cannot_construct_is_a_config_error(value: str) -> None:
    message = _refused(f"providers:\n  oa:\n    type: openai\n    organization: {value}\n    models: [{{name: x}}]\n")
    assert "line 4" in message and "cannot read this" in message
    assert SECRET not in message
