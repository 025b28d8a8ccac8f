"""Jinja2 rendering for every message, report and generated document.

Templates are data and live in ``runbooks/templates/<runbook>/``. A ``runbooks/templates``
directory in the working directory is searched first, so an estate can override wording
without touching the package.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined

PACKAGED = Path(__file__).resolve().parents[1] / "runbooks" / "templates"


@cache
def environment(cwd: Path | None = None) -> Environment:
    here = (cwd or Path.cwd()) / "runbooks" / "templates"
    search = [str(p) for p in dict.fromkeys([here, PACKAGED]) if p.is_dir()]
    return Environment(
        loader=ChoiceLoader([FileSystemLoader(search)]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template: str, **context: Any) -> str:
    """Render ``template`` (e.g. ``readiness_check/report.md.j2``) with ``context``."""
    return environment().get_template(template).render(**context)
