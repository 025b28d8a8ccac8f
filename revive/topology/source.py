"""Reading YAML while remembering where every key and item came from.

PyYAML's composer keeps a line mark on every node; we walk the node tree once to build a map
from key paths (``("services", 7, "depends_on")``) to 1-based line numbers, so any later
error, from pydantic or from the cross-reference checks, can say "file:line key: what".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from revive.errors import Issue, TopologyError

Loc = tuple[str | int, ...]


@dataclass
class Located:
    """Plain data read from a file plus the line of every key path in it."""

    data: Any
    path: str
    lines: dict[Loc, int] = field(default_factory=dict)
    duplicates: list[tuple[Loc, int]] = field(default_factory=list)

    def line_of(self, loc: Loc) -> int:
        """Line of the deepest known prefix of ``loc`` (a missing key points at its parent)."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return 1

    def issue(self, loc: Loc, message: str) -> Issue:
        return Issue(line=self.line_of(loc), key=format_loc(loc), message=message, path=self.path)


def format_loc(loc: Loc) -> str:
    """``("services", 7, "depends_on")`` -> ``services[7].depends_on``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def read_yaml(path: Path | str) -> Located:
    """Parse a YAML file into data and line map; raise TopologyError on unreadable input."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise TopologyError([Issue(0, "", f"cannot read file: {exc.strerror}", name)]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TopologyError([Issue(line, "", "file is not UTF-8 text", name)]) from exc
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str = "<string>") -> Located:
    """Parse YAML text; an empty document or a syntax error is a located TopologyError."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise TopologyError([Issue(1, "", "file is empty", name)])
        data = loader.construct_document(node)
        located = Located(data=data, path=name)
        _walk(loader, node, (), located)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or exc.context or "syntax error"
        raise TopologyError([Issue(line, "", f"invalid YAML: {problem}", name)]) from exc
    except yaml.YAMLError as exc:
        raise TopologyError([Issue(1, "", f"invalid YAML: {exc}", name)]) from exc
    finally:
        loader.dispose()
    return located


def _walk(
    loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, out: Located, depth: int = 0
) -> None:
    out.lines.setdefault(loc, node.start_mark.line + 1)
    if depth > 64:  # only a recursive alias nests this deep in a topology
        raise TopologyError([out.issue(loc, "document nests too deeply (recursive alias?)")])
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int) or isinstance(key, bool):
                key = str(key)
            if key in seen:
                out.duplicates.append(((*loc, key), key_node.start_mark.line + 1))
            seen.add(key)
            out.lines[(*loc, key)] = key_node.start_mark.line + 1
            _walk(loader, value_node, (*loc, key), out, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(loader, item, (*loc, index), out, depth + 1)
