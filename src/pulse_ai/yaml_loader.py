"""Safe, bounded YAML loading and ``${VAR}`` interpolation, under the configuration models.

A configuration is a few KiB, so everything a file could make us do is bounded before it is done:
its size (``MAX_BYTES``), its nesting (``MAX_DEPTH``), its aliases (``MAX_ALIASES``) and what it
expands to once aliases are followed (``MAX_NODES`` nodes, ``MAX_EXPANDED_CHARS`` characters). An
alias bomb of a few hundred bytes is refused after composing a few dozen nodes, before anything walks
the expanded tree. A key repeated in a mapping is refused (YAML would silently keep the last one).
Every problem is a :class:`ConfigError` naming the file, the key path where there is one and the line;
none quotes a value, since a value may be a secret (a quoted fragment of YAML's own messages is
replaced by ``'…'`` unless it is one character or a token name such as ``'<stream end>'``).

Interpolation: ``${VAR}``, ``${VAR:-default}`` where the default may itself hold references
(``${A:-${B:-x}}``), and ``$${`` for a literal ``${``. A variable's value is inserted as it is, never
interpolated again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import yaml
from yaml.constructor import ConstructorError
from yaml.error import Mark, MarkedYAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from pulse_ai.errors import ConfigError

__all__ = [
    "MAX_ALIASES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_EXPANDED_CHARS",
    "MAX_NESTED_VARIABLES",
    "MAX_NODES",
    "interpolate",
    "join_key",
    "load_yaml",
    "read_config_file",
]

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_ALIASES = 64
MAX_NODES = 20_000
MAX_EXPANDED_CHARS = 4 * MAX_BYTES
MAX_NESTED_VARIABLES = 8

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Position(Protocol):  # yaml.error.Mark, or libyaml's
    line: int
    column: int


def join_key(path: str, key: object) -> str:
    """``path.key``, with a key that is not printable text shown as its repr (one line, always)."""
    text = str(key)
    if not text.isprintable():
        text = repr(text)
    return f"{path}.{text}" if path else text


def read_config_file(path: Path) -> str:
    """The file's text: at most ``MAX_BYTES``, and UTF-8, or a :class:`ConfigError` saying which."""
    source = str(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=source) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(_too_large(), source=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"not UTF-8 text: a byte at line {line}, column {column} is not valid UTF-8 (save the file as UTF-8)",
            source=source,
        ) from None


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document within the bounds above; ``None`` for an empty one."""
    if len(text) > MAX_BYTES:
        raise ConfigError(_too_large(), source=source)
    try:
        loader = _BoundedLoader(text, source)
    except ReaderError as exc:  # raised while checking the whole text, before any parsing
        raise ConfigError(_unreadable_character(text, exc), source=source) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        loader.check_expanded(node)
        return loader.construct_document(node)
    except MarkedYAMLError as exc:
        raise ConfigError(f"not valid YAML{_describe_yaml_error(exc)}", source=source) from None
    except yaml.YAMLError:
        raise ConfigError("not valid YAML", source=source) from None
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that bounds composition and refuses duplicate keys, naming key paths."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self._path: list[str] = []  # the key path of the node being composed
        self._aliases = 0
        self._composed = 0
        self._expanded = 0
        self._expanded_chars = 0

    # Composition: depth, aliases and nodes are counted as the document is read.
    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if isinstance(index, ScalarNode):  # the value of a mapping entry
            self._path.append("." + join_key("", index.value))
        elif isinstance(index, int):
            self._path.append(f"[{index}]")
        else:  # the document root, or a mapping key
            self._path.append("")
        try:
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
            if len(self._path) > MAX_DEPTH:
                self._fail(f"nested deeper than {MAX_DEPTH} levels", self._key_path(), event.start_mark)
            self._composed += 1
            if self._composed > MAX_NODES:
                self._fail(f"more than {MAX_NODES:,} nodes", self._key_path(), event.start_mark)
            if isinstance(event, yaml.AliasEvent):
                self._aliases += 1
                if self._aliases > MAX_ALIASES:
                    self._fail(f"more than {MAX_ALIASES} aliases (`*name`)", self._key_path(), event.start_mark)
                if event.anchor not in self.anchors:  # YAML's own message would quote the name
                    self._fail(
                        "an alias (`*…`) that no anchor (`&…`) defines; quote a value that starts with `*`",
                        self._key_path(),
                        event.start_mark,
                    )
            return super().compose_node(parent, index)
        finally:
            self._path.pop()

    def _key_path(self) -> str:
        path = "".join(self._path)
        return path[1:] if path.startswith(".") else path

    # Expansion: walk the composed graph as construction would, counting every node an alias repeats.
    def check_expanded(self, root: Node) -> None:
        self._walk(root, "", 1, set())

    def _walk(self, node: Node, path: str, depth: int, ancestors: set[int]) -> None:
        self._expanded += 1
        if self._expanded > MAX_NODES:
            self._fail(f"the document expands to more than {MAX_NODES:,} nodes through aliases", path, None)
        if depth > MAX_DEPTH:
            self._fail(f"nested deeper than {MAX_DEPTH} levels (through aliases)", path, node.start_mark)
        if isinstance(node, ScalarNode):
            self._expanded_chars += len(node.value)
            if self._expanded_chars > MAX_EXPANDED_CHARS:
                limit = f"{MAX_EXPANDED_CHARS // 1024} KiB"
                self._fail(f"the document expands to more than {limit} of text through aliases", path, None)
            return
        if id(node) in ancestors:
            self._fail("a recursive alias: a node that contains itself", path, node.start_mark)
        ancestors.add(id(node))
        if isinstance(node, SequenceNode):
            for index, child in enumerate(node.value):
                self._walk(child, f"{path}[{index}]", depth + 1, ancestors)
        elif isinstance(node, MappingNode):
            first_marks: dict[Any, Mark] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:  # `<<: *base`: its keys may be overridden here, by design
                    self._walk(value_node, path, depth + 1, ancestors)
                    continue
                if not isinstance(key_node, ScalarNode):
                    self._fail("a key must be a plain value, not a list or a mapping", path, key_node.start_mark)
                key = self.construct_object(key_node)
                try:
                    first = first_marks.get(key)
                except TypeError:  # unhashable: not a plain value
                    self._fail("a key must be a plain value", path, key_node.start_mark)
                if first is not None:
                    self._fail(f"duplicate key {key!r} ({_two_places(first, key_node.start_mark)})", path, None)
                first_marks[key] = key_node.start_mark
                self._walk(value_node, join_key(path, key_node.value), depth + 1, ancestors)
        ancestors.discard(id(node))

    # Construction: a value YAML cannot build is a located error, never a raw exception quoting it.
    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        # e.g. `!!int sk-...`, a 5,000-digit integer; `!!timestamp x` (AttributeError), `!!bool x` (KeyError)
        except (ValueError, TypeError, ArithmeticError, AttributeError, LookupError):
            kind = node.tag.rsplit(":", 1)[-1] if node.tag.startswith("tag:yaml.org,2002:") else "value"
            raise ConstructorError(None, None, f"cannot read this {kind}", node.start_mark) from None

    def construct_undefined(self, node: Node) -> NoReturn:  # its message would quote the tag, maybe a secret
        raise ConstructorError(None, None, "an unknown tag (`!…`); quote a value that starts with `!`", node.start_mark)

    def _fail(self, problem: str, key_path: str, mark: _Position | None) -> NoReturn:
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{problem}{where}", source=self.source, key_path=key_path or None)


def _two_places(first: Mark, second: Mark) -> str:
    if first.line == second.line:
        return f"line {first.line + 1}, columns {first.column + 1} and {second.column + 1}"
    return f"lines {first.line + 1} and {second.line + 1}"


_QUOTED = re.compile(r"'([^'\n]*)'")
_HARMLESS = re.compile(r"<[^>]*>|.|\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")


def _describe_yaml_error(exc: MarkedYAMLError) -> str:
    """`` at line L, column C: problem (context at line …)``, without quoting more than a character."""

    def redact(text: str) -> str:
        return _QUOTED.sub(lambda m: m.group(0) if _HARMLESS.fullmatch(m.group(1)) else "'…'", text)

    def at(mark: Mark | None) -> str:
        return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    text = at(exc.problem_mark)
    if exc.problem:
        text += f": {redact(exc.problem)}"
    if exc.context:
        text += f" ({redact(exc.context)}{at(exc.context_mark)})"
    return " ".join(text.splitlines())


def _unreadable_character(text: str, exc: ReaderError) -> str:
    position = int(exc.position)
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
    return f"not valid YAML: a character YAML does not allow (U+{code:04X}) at line {line}, column {column}"


def _too_large() -> str:
    return f"too large: more than {MAX_BYTES // 1024} KiB (a configuration is a few KiB)"


# --- interpolation ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Variable:
    name: str
    default: tuple[str | _Variable, ...] | None  # None: no `:-`


_Parts = tuple[str | _Variable, ...]
_REFERENCE = re.compile(r"\$\$?\{")  # outside any `${...}`, a `}` is plain text
_REFERENCE_OR_END = re.compile(r"\$\$?\{|\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(node: Any, environ: Mapping[str, str], source: str, path: str = "") -> Any:
    """Replace ``${VAR}``, ``${VAR:-default}`` (nestable) and ``$${`` in every string of a parsed YAML tree.

    An unset variable without a default, or a malformed reference, is a :class:`ConfigError` naming
    the key path; an error never contains a variable's value.
    """
    if isinstance(node, dict):
        return {key: interpolate(value, environ, source, join_key(path, key)) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, environ, source, f"{path}[{i}]") for i, value in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return node

    def fail(message: str) -> NoReturn:
        raise ConfigError(message, source=source, key_path=path or None)

    parts, end = _parse(node, 0, 0, fail)
    if end != len(node):  # pragma: no cover - at depth 0 only the end of the text stops the parser
        fail("cannot read the `${...}` references")
    return _render(parts, environ, fail)


def _parse(text: str, start: int, depth: int, fail: Callable[[str], NoReturn]) -> tuple[_Parts, int]:
    """Parts from ``start`` to the end of the text, or (inside a default) to its unmatched ``}``."""
    parts: list[str | _Variable] = []
    literal: list[str] = []

    def flush() -> None:
        if any(literal):
            parts.append("".join(literal))
        literal.clear()

    pattern = _REFERENCE_OR_END if depth > 0 else _REFERENCE
    index = start
    while (token := pattern.search(text, index)) is not None:
        literal.append(text[index : token.start()])
        if token.group() == "}":  # the end of the enclosing default: the caller consumes it
            flush()
            return tuple(parts), token.start()
        if token.group() == "$${":
            literal.append("${")
            index = token.end()
        else:
            flush()
            variable, index = _parse_variable(text, token.start(), depth + 1, fail)
            parts.append(variable)
    literal.append(text[index:])
    flush()
    return tuple(parts), len(text)


def _parse_variable(text: str, opened: int, depth: int, fail: Callable[[str], NoReturn]) -> tuple[_Variable, int]:
    where = f"`${{` at character {opened + 1}"
    if depth > MAX_NESTED_VARIABLES:
        fail(f"{where}: `${{...}}` nested more than {MAX_NESTED_VARIABLES} deep")
    name = _NAME.match(text, opened + 2)
    if name is None:
        fail(f"{where} must be followed by a variable name (write `$${{` for a literal `${{`)")
    index = name.end()
    if text.startswith("}", index):
        return _Variable(name.group(), None), index + 1
    if text.startswith(":-", index):
        default, index = _parse(text, index + 2, depth, fail)
        if index < len(text):  # stopped at the closing `}`
            return _Variable(name.group(), default), index + 1
    if index >= len(text):
        fail(f"unterminated {where}: no closing `}}` (write `$${{` for a literal `${{`)")
    fail(f"{where}: a variable name must be followed by `}}` or `:-default}}`")


def _render(parts: _Parts, environ: Mapping[str, str], fail: Callable[[str], NoReturn]) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value = environ.get(part.name)
        if value is None or (value == "" and part.default is not None):
            if part.default is None:
                fail(f"environment variable {part.name} is not set (use ${{{part.name}:-default}} for a default)")
            value = _render(part.default, environ, fail)
        out.append(value)
    return "".join(out)
