"""Reading YAML while remembering where every key and item came from.

PyYAML's composer keeps a line mark on every node; we walk the node tree once to build a map
from key paths (``("services", 7, "depends_on")``) to 1-based line numbers, so any later
error, from pydantic or from the cross-reference checks, can say "file:line key: what".

A topology file is input from a person, so it is read within limits: at most ``MAX_BYTES``,
nested at most ``MAX_DEPTH`` deep, at most ``MAX_NODES`` nodes, aliases that expand to at
most ``MAX_ALIAS_NODES`` nodes in all (a 758-byte "billion laughs" would otherwise expand to
a billion), and numbers of at most ``MAX_NUMBER_CHARS`` characters (Python refuses to parse
an int of more than 4,300 digits, and nothing in a topology needs more than a dozen). The
limits are checked on the event stream first, which costs no recursion and stops at the
first excess, and only then is the document composed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from revive.errors import Issue, TopologyError

Loc = tuple[str | int, ...]

MAX_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 500_000
"""A generated 10,000-service estate has about 300,000; each costs about 1 kB to load."""
MAX_ALIAS_NODES = 100_000
MAX_NUMBER_CHARS = 40

# libyaml's parser and composer are C: no Python recursion and ten times faster.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NUMBER = re.compile(r"[-+]?[0-9.]")
_NUMERIC_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


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
        with Path(path).open("rb") as file:
            raw = file.read(MAX_BYTES + 1)  # never all of /dev/zero or a 300 GB file
    except OSError as exc:
        raise TopologyError([Issue(0, "", f"cannot read file: {exc.strerror}", name)]) from exc
    if len(raw) > MAX_BYTES:
        raise TopologyError([Issue(1, "", _too_big(), name)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TopologyError([Issue(line, "", "file is not UTF-8 text", name)]) from exc
    return parse_yaml(text, name)


class _CheckedLoader(_Loader):  # type: ignore[valid-type,misc]
    """A value its explicit tag cannot read (``!!int abc``, ``!!timestamp 2020-13-45``) makes
    PyYAML's constructors raise ValueError and friends, not a YAML error: here it becomes a
    located one, like any other invalid YAML."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, TopologyError):
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            tag = str(node.tag).rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"{tag} value cannot be read ({type(exc).__name__})",
                node.start_mark) from exc


def parse_yaml(text: str, name: str = "<string>") -> Located:
    """Parse YAML text; an empty document, a syntax error or an excess is a located error."""
    if len(text) > MAX_BYTES:
        raise TopologyError([Issue(1, "", _too_big(), name)])
    try:
        _check_limits_of(text, name)
        loader = _CheckedLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise TopologyError([Issue(1, "", "file is empty", name)])
            data = loader.construct_document(node)
            located = Located(data=data, path=name)
            _walk(loader, node, (), located)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or exc.context or "syntax error"
        raise TopologyError([Issue(line, "", f"invalid YAML: {problem}", name)]) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, e.g. NUL
        line = text[: max(0, exc.position)].count("\n") + 1
        what = (f"#x{exc.character:04x}" if isinstance(exc.character, int)
                else f"#x{ord(exc.character):04x}" if isinstance(exc.character, str)
                and len(exc.character) == 1 else repr(exc.character))
        raise TopologyError([Issue(line, "", f"invalid YAML: unacceptable character {what}",
                                   name)]) from exc
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TopologyError([Issue(1, "", f"invalid YAML: {first}", name)]) from exc
    return located


def _check_limits_of(text: str, name: str) -> None:
    """``_check_limits`` on libyaml's events, or Python's where libyaml stops too early.

    libyaml refuses 1,000 levels of flow nesting while still scanning ahead, before the
    first 64 reach us, and its message has no key; PyYAML's own parser scans at most 1,024
    characters ahead, so it gets to the located refusal.
    """
    try:
        _check_limits(yaml.parse(text, Loader=_Loader), name)
    except yaml.MarkedYAMLError as exc:
        if _Loader is yaml.SafeLoader or "nesting" not in str(exc.problem):
            raise
        _check_limits(yaml.parse(text, Loader=yaml.SafeLoader), name)
        raise


def _too_big() -> str:
    return f"file is larger than {MAX_BYTES // (1024 * 1024)} MB"


@dataclass
class _Open:
    """A collection being parsed: its anchor, expanded size so far and current child."""

    anchor: str | None
    mapping: bool
    size: int = 1
    children: int = 0
    key: str | int = "?"

    def child(self) -> str | int | None:
        """The key path part of the child being parsed (None while parsing a mapping key)."""
        if not self.mapping:
            return self.children
        return self.key if self.children % 2 else None


def _check_limits(events: Iterator[yaml.Event], name: str) -> None:
    """Refuse excess depth, size, alias expansion or number length, before composing."""
    stack: list[_Open] = []
    sizes: dict[str, int] = {}
    nodes = aliased = 0

    def fail(event: yaml.Event, message: str) -> TopologyError:
        loc: list[str | int] = []
        for frame in stack:
            part = frame.child()
            if part is None:
                break
            loc.append(part)
        key = format_loc(tuple(loc[:4])) + ("..." if len(loc) > 4 else "")
        return TopologyError([Issue(event.start_mark.line + 1, key, message, name)])

    def done(size: int, anchor: str | None, value: Any = None) -> None:
        if anchor is not None:
            sizes[anchor] = size
        if stack:
            parent = stack[-1]
            if parent.mapping and parent.children % 2 == 0:
                parent.key = value if isinstance(value, str) else "?"
            parent.size += size
            parent.children += 1

    for event in events:
        if isinstance(event, yaml.CollectionStartEvent):
            nodes += 1
            if len(stack) >= MAX_DEPTH:
                raise fail(event, f"nested more than {MAX_DEPTH} levels deep")
            stack.append(_Open(event.anchor, isinstance(event, yaml.MappingStartEvent)))
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = stack.pop()
            done(frame.size, frame.anchor)
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if len(event.value) > MAX_NUMBER_CHARS and _is_number(event):
                raise fail(event, f"number has {len(event.value)} characters; at most "
                           f"{MAX_NUMBER_CHARS} are accepted")
            done(1, event.anchor, event.value)
        elif isinstance(event, yaml.AliasEvent):
            size = sizes.get(event.anchor or "", 1)
            aliased += size
            if aliased > MAX_ALIAS_NODES:
                raise fail(event, f"aliases expand to more than {MAX_ALIAS_NODES} nodes "
                           "(an alias bomb?)")
            done(size, None)
        if nodes > MAX_NODES:
            raise fail(event, f"document has more than {MAX_NODES} nodes")


def _is_number(event: yaml.ScalarEvent) -> bool:
    """Whether a plain scalar resolves to an int or a float (quoted ones are strings)."""
    if not event.implicit[0] or not _NUMBER.match(event.value):
        return False
    tag = yaml.resolver.Resolver().resolve(yaml.ScalarNode, event.value, (True, False))
    return tag in _NUMERIC_TAGS


def _walk(
    loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, out: Located, depth: int = 0
) -> None:
    out.lines.setdefault(loc, node.start_mark.line + 1)
    if depth > MAX_DEPTH:  # _check_limits refused deeper documents before they were composed
        raise TopologyError([out.issue(loc, f"nested more than {MAX_DEPTH} levels deep")])
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
