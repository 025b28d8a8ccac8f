"""Jinja2 rendering for every message, report and generated document.

Templates are data and live in ``runbooks/templates/<runbook>/``. A ``runbooks/templates``
directory in the working directory is searched first, so an estate can override wording
without touching the package.

Markdown templates (``*.md.j2`` published as Prefect artifacts) pass every name and every
text that came from a user or a tool through ``md`` (or ``mdcode``): the Prefect UI renders
the markdown, raw HTML included, so ``<img src=x onerror=...>`` in a path, a name or a tool's
error message would otherwise run in the viewer's browser, and a ``|`` or a line break would
break the table it sits in.
"""

from __future__ import annotations

import html
import re
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined

PACKAGED = Path(__file__).resolve().parents[1] / "runbooks" / "templates"

_MD_ACTIVE = re.compile(r"([\\`*_\[\]|~])")
"""Characters that start emphasis, code, links, tables or strike-through anywhere in a line."""
_LINE_START = re.compile(r"^(\s*)([#+=-])")
_ORDERED = re.compile(r"^(\s*\d+)([.)])")
"""What makes a heading, a list or a rule when it opens a line."""
_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
_PLAIN = re.compile(r"[A-Za-z0-9._:/@+=-]+")


def md(value: object) -> str:
    """``value`` as literal markdown text: HTML escaped, markdown syntax backslash-escaped,
    on one line (so it cannot end a table row or start a block)."""
    text = _BREAKS.sub(" ", str(value))
    text = _MD_ACTIVE.sub(r"\\\1", text)
    text = _LINE_START.sub(r"\1\\\2", text)
    text = _ORDERED.sub(r"\1\\\2", text)
    return html.escape(text, quote=False)


def mdcode(value: object) -> str:
    """``value`` as an inline code span when it is plain (a name, a path, a key), else as
    ``md`` text: inside a code span, neither an entity nor a backslash escape works."""
    text = str(value)
    return f"`{text}`" if _PLAIN.fullmatch(text) else md(text)


@cache
def environment(cwd: Path | None = None) -> Environment:
    here = (cwd or Path.cwd()) / "runbooks" / "templates"
    search = [str(p) for p in dict.fromkeys([here, PACKAGED]) if p.is_dir()]
    env = Environment(
        loader=ChoiceLoader([FileSystemLoader(search)]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["md"] = md
    env.filters["mdcode"] = mdcode
    return env


def render(template: str, **context: Any) -> str:
    """Render ``template`` (e.g. ``readiness_check/report.md.j2``) with ``context``."""
    return environment().get_template(template).render(**context)
