"""YAML documents that remember where each value came from.

Config errors must name the file, the line and the YAML path
(``workflows/order.yaml:14: steps[2].expect.status: ...``). PyYAML's composed
node tree carries line marks; this module turns it into plain Python data plus
an index from path to line, and rejects what plain ``yaml.safe_load`` would
silently accept, such as duplicate keys.

Only plain YAML is read: a tag other than the core schema's (``!!python/...``,
``!custom``, ``!!binary``, ``!!set``) is refused by name, never constructed;
aliases (``*name``) are refused, so an alias bomb cannot expand; nesting
deeper than `MAX_DEPTH` is refused before it can overflow the stack. Every
failure is a ConfigError (tests/test_fuzz_config.py holds the property).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "Document", "PathKey", "Problem", "expand_environment", "format_path", "load_document"]

PathKey = tuple[str | int, ...]

MAX_DEPTH = 64
# The core schema's tags (what plain YAML resolves to without a tag written); nothing else is built.
_CORE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)


def _shown_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


@dataclass(frozen=True)
class Problem:
    """One config error, located."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """Raised with every problem found, so one `check` run lists them all."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def format_path(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Document:
    """Parsed YAML data and the line (1-based) of every key and item."""

    file: str
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, path: PathKey) -> int | None:
        # Walk up until a located ancestor: a missing key is reported on its parent.
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def problem(self, path: PathKey, message: str) -> Problem:
        return Problem(self.file, self.line_of(path), format_path(path), message)

    def data_path(self, loc: tuple[Any, ...], *, missing: bool = False) -> PathKey:
        """Keep the parts of a validator's location that exist in the data.

        Pydantic adds union member tags (``str``, ``constrained-int``,
        ``function-after[...]``) and ``[key]`` to locations; those are not
        YAML paths. Walking the real data drops them. With ``missing``, the
        last part names a required key that is absent, and is kept.
        """
        node = self.data
        path: list[str | int] = []
        for index, part in enumerate(loc):
            if isinstance(node, dict) and part in node:
                node = node[part]
                path.append(part)
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
                path.append(part)
            elif missing and index == len(loc) - 1:
                path.append(part)
        return tuple(path)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_environment(value: str, environ: os._Environ[str] | dict[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` the way docker compose does.

    An unset variable without a default raises KeyError with its name.
    """

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ and environ[name] != "":
            return environ[name]
        if default is not None:
            return default
        raise KeyError(name)

    return _ENV_REF.sub(sub, value)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[PathKey, int] = {}
        self.problems: list[Problem] = []
        # Tags were resolved while composing; SafeConstructor only converts scalars.
        self.scalars = yaml.constructor.SafeConstructor()
        self.built: set[int] = set()  # nodes seen: a node met twice is an alias

    def problem(self, node: yaml.Node, path: PathKey, message: str) -> None:
        self.problems.append(Problem(self.file, node.start_mark.line + 1, format_path(path), message))

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        if id(node) in self.built:
            # An alias is the anchored node itself, marked where the anchor is: report it on its key's line.
            line = self.lines.get(path, node.start_mark.line + 1)
            self.problems.append(Problem(self.file, line, format_path(path), "YAML aliases (*name) are not supported"))
            return None
        self.built.add(id(node))
        self.lines[path] = node.start_mark.line + 1
        if node.tag not in _CORE_TAGS and node.tag != "tag:yaml.org,2002:merge":
            self.problem(node, path, f"YAML tag {_shown_tag(node.tag)} is not supported")
            return None
        if len(path) > MAX_DEPTH:
            self.problem(node, path[:2], f"nested deeper than {MAX_DEPTH} levels")
            return None
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.problems.append(
                        Problem(self.file, key_node.start_mark.line + 1, format_path(path), "YAML merge keys (<<) are not supported")
                    )
                    continue
                key = self.build(key_node, path + ("<key>",))
                if not isinstance(key, (str, int, float, bool)):
                    self.problems.append(
                        Problem(self.file, key_node.start_mark.line + 1, format_path(path), "mapping keys must be scalars")
                    )
                    continue
                if key in out:
                    first = self.lines[path + (key,)]
                    self.problems.append(
                        Problem(self.file, key_node.start_mark.line + 1, format_path(path + (str(key),)), f"duplicate key (first on line {first})")
                    )
                    continue
                self.lines[path + (key,)] = key_node.start_mark.line + 1  # where an alias as its value is reported
                out[key] = self.build(value_node, path + (key,))
                self.lines[path + (key,)] = key_node.start_mark.line + 1
            self.lines.pop(path + ("<key>",), None)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        try:
            return self.scalars.construct_object(node, deep=True)
        except Exception:  # noqa: BLE001 - core tags only reach here; their constructors fail in many ways ("!!float" alone: IndexError)
            # "!!float abc", "!!timestamp xyz": a core tag with a value it cannot hold.
            self.problem(node, path, f"invalid {_shown_tag(node.tag)} value {node.value!r}"[:200])
            return None


def _second_document_line(text: str) -> int:
    """The line of the ``---`` (or content) that starts the second document."""
    starts = [e.start_mark.line + 1 for e in yaml.parse(text, Loader=yaml.SafeLoader) if isinstance(e, yaml.DocumentStartEvent)]
    return starts[1]


def load_document(path: Path | str, text: str | None = None, *, display: str | None = None) -> Document:
    """Parse one YAML file. Raises ConfigError for syntax errors and duplicate keys."""
    file = display or str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise ConfigError([Problem(file, None, "", f"cannot read file: {reason}")]) from None
        except UnicodeDecodeError:
            raise ConfigError([Problem(file, None, "", "file is not valid UTF-8")]) from None
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except RecursionError:  # PyYAML composes recursively: nesting in the thousands overflows it
        raise ConfigError([Problem(file, None, "", f"invalid YAML: nested deeper than {MAX_DEPTH} levels")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = f"invalid YAML: {exc.problem}" if exc.problem else "invalid YAML"
        raise ConfigError([Problem(file, line, "", message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, None, "", f"invalid YAML: {exc}")]) from None
    if len(nodes) > 1:
        raise ConfigError([Problem(file, _second_document_line(text), "", "only one YAML document per file is allowed")])
    builder = _Builder(file)
    data = builder.build(nodes[0], ()) if nodes else None
    if builder.problems:
        raise ConfigError(builder.problems)
    return Document(file, data, builder.lines)
