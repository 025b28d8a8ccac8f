"""Prometheus as the metrics tool: one PromQL instant query per field of a ``Sample``.

Prometheus is replicated per DC for availability (each replica scrapes every DC), so any
replica can answer for any DC: queries go through the tool's ``ReplicatedEndpoint`` and fail
over when the preferred replica is down, answers 5xx or stays silent past the timeout.

What the topology says (``settings:``), one PromQL expression per field of the sample::

    prometheus:
      kind: metrics
      adapter: prometheus
      replicas: {dc1: "http://prometheus.dc1:9090", dc2: "http://prometheus.dc2:9090"}
      settings:
        queries:                  # class_sample(class, dc): {class} and {dc}
          share: 'revive_class_share{class="{class}",dc="{dc}"}'
          db_util: 'revive_db_utilisation_ratio{dc="{dc}"}'
          p99_ms: '1000 * revive_class_p99_latency_seconds{class="{class}",dc="{dc}"}'
          error_rate: 'revive_class_error_ratio{class="{class}",dc="{dc}"}'
          retry_ratio: 'revive_retry_ratio{dc="{dc}"}'              # optional: 0.0 if absent
          cache_hit_ratio: 'revive_class_cache_hit_ratio{class="{class}",dc="{dc}"}'  # optional
        dc_queries:               # sample(dc): {dc} only; required when queries use {class}
          share: 'revive_traffic_share{dc="{dc}"}'
          ...
        timeout_s: 5              # optional: per request to one replica (default: the run's)

Placeholders, and why they cannot break a query. PromQL has braces of its own (label
matchers ``{job="x"}``, regex repetitions ``"a{2}"``), so no format-string machinery is
used. A placeholder is exactly ``{class}`` or ``{dc}``; the expression is tokenised at
settings time (string literals, raw strings, comments, code) and a placeholder must sit
inside a ``"..."`` or ``'...'`` string literal, where its value is escaped for that quote
(backslash, the quote, control characters), and, after ``=~`` or ``!~``, escaped as a
regular expression too, so that it matches the class name literally. A placeholder outside a
string, inside a backtick string (which has no escapes) or in a comment is refused, as is
any other ``{word}`` (a typo such as ``{cls}``); a literal ``{word}`` inside a string can be
written ``\\x7bword}``. Substitution is done once from the parsed pieces, so a value that
itself contains ``{dc}`` is never expanded again.

Answers. No series means "no data yet: hold" (``NoDataError`` naming the field, the target
and the query), never 0; so does NaN or ±Inf. More than one series is an ambiguous query
(``PermanentOpsError``: aggregate it, or match one series). A query Prometheus refuses (400
``bad_data``, 422 ``execution``) is a ``PermanentOpsError`` carrying Prometheus's own error
text. ``t`` is the evaluation timestamp Prometheus gives with the result (the latest of the
fields'). The fields are queried concurrently; ``query`` times one instant query on its own.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, NamedTuple

import httpx
from pydantic import AfterValidator, Field, StringConstraints, ValidationInfo, field_validator

from revive.errors import NoDataError, OpsError, PermanentOpsError, TransientOpsError
from revive.ops.endpoint import EndpointError, EndpointPolicy, ReplicatedEndpoint
from revive.ops.plugins import Adapter, AdapterSettings, ToolContext
from revive.ramp import Sample
from revive.topology.models import ToolKind

__all__ = [
    "ADAPTER",
    "ClassQueries",
    "DcQueries",
    "Point",
    "PrometheusMetrics",
    "PrometheusSettings",
    "QueryTemplate",
    "parse_template",
]

CLASS_PLACEHOLDERS = frozenset({"class", "dc"})
DC_PLACEHOLDERS = frozenset({"dc"})
QUERY_PATH = "/api/v1/query"
READY_PATH = "/-/ready"

# ``{word}`` with optional blanks inside: a PromQL label matcher always has an operator and a
# string (``{job="x"}``) and a regex repetition has digits (``a{2}``), so neither matches.
_TOKEN = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")
_RE2_META = frozenset("\\.+*?()|[]{}^$")
_MAX_LABELS_SHOWN = 3


# --- query templates -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """Where a placeholder's value goes: inside which quote, as a regex or not."""

    name: str
    quote: str
    regex: bool


@dataclass(frozen=True)
class QueryTemplate:
    """A PromQL expression cut into literal text and placeholder slots."""

    text: str
    parts: tuple[str | _Slot, ...]

    @property
    def names(self) -> frozenset[str]:
        """The placeholders the expression uses."""
        return frozenset(p.name for p in self.parts if isinstance(p, _Slot))

    def render(self, values: Mapping[str, str]) -> str:
        """The expression with each placeholder's value escaped for where it stands."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = values[part.name]
            out.append(_escape_string(_escape_regex(value) if part.regex else value, part.quote))
        return "".join(out)


def _escape_regex(value: str) -> str:
    """RE2's QuoteMeta: the value matches itself literally after ``=~``/``!~``."""
    return "".join(f"\\{c}" if c in _RE2_META else c for c in value)


def _escape_string(value: str, quote: str) -> str:
    """Escape for a PromQL (Go) string literal in ``quote``: nothing can close it early."""
    out: list[str] = []
    for c in value:
        if c in ("\\", quote):
            out.append(f"\\{c}")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


def _placeholder_error(token: re.Match[str], allowed: frozenset[str], where: str) -> ValueError:
    name = token.group(1)
    names = " and ".join(f"{{{n}}}" for n in sorted(allowed))
    if name in CLASS_PLACEHOLDERS and name not in allowed:
        return ValueError(f"{{{name}}} is not available here: only {names}")
    if name not in allowed:
        return ValueError(
            f"unknown placeholder {token.group(0)!r}: only {names} are filled in "
            "(a literal '{' inside a string can be written \\x7b)"
        )
    if token.group(0) != f"{{{name}}}":
        return ValueError(f"write the placeholder as {{{name}}}, without blanks")
    return ValueError(
        f"placeholder {{{name}}} {where}: it must sit inside a \"...\" or '...' string literal, "
        f"e.g. {name}=\"{{{name}}}\", where its value is escaped"
    )


def _no_tokens(segment: str, allowed: frozenset[str], where: str) -> None:
    token = _TOKEN.search(segment)
    if token is not None:
        raise _placeholder_error(token, allowed, where)


def _after_regex_operator(text: str, start: int) -> bool:
    return text[:start].rstrip().endswith(("=~", "!~"))


def _string_end(text: str, start: int) -> int:
    """Index of the quote closing the string literal that opens at ``start``."""
    quote, i = text[start], start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == quote:
            return i
        if c == "\n":
            break
        i += 1
    raise ValueError(f"unterminated string literal at character {start + 1}")


def parse_template(text: str, allowed: frozenset[str] = CLASS_PLACEHOLDERS) -> QueryTemplate:
    """Cut a PromQL expression into literals and slots; ``ValueError`` saying what is wrong."""
    parts: list[str | _Slot] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in "\"'":
            end = _string_end(text, i)
            body, regex, pos = text[i + 1:end], _after_regex_operator(text, i), 0
            literal.append(c)
            for token in _TOKEN.finditer(body):
                if token.group(1) not in allowed or token.group(0) != f"{{{token.group(1)}}}":
                    raise _placeholder_error(token, allowed, "in a string")
                literal.append(body[pos:token.start()])
                parts.append("".join(literal))
                literal = []
                parts.append(_Slot(token.group(1), c, regex))
                pos = token.end()
            literal.append(body[pos:] + c)
            i = end + 1
        elif c == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise ValueError(f"unterminated raw string at character {i + 1}")
            _no_tokens(text[i:end], allowed, "is in a `raw` string, which has no escapes")
            literal.append(text[i:end + 1])
            i = end + 1
        elif c == "#":
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            _no_tokens(text[i:end], allowed, "is in a comment")
            literal.append(text[i:end])
            i = end
        else:
            token = _TOKEN.match(text, i)
            if token is not None:
                raise _placeholder_error(token, allowed, "is outside a string literal")
            literal.append(c)
            i += 1
    parts.append("".join(literal))
    return QueryTemplate(text, tuple(p for p in parts if p != ""))


def _checked(allowed: frozenset[str], text: str) -> str:
    parse_template(text, allowed)
    return text


_Expr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
ClassQuery = Annotated[_Expr, AfterValidator(partial(_checked, CLASS_PLACEHOLDERS))]
DcQuery = Annotated[_Expr, AfterValidator(partial(_checked, DC_PLACEHOLDERS))]


# --- settings ------------------------------------------------------------------------------


class ClassQueries(AdapterSettings):
    """One PromQL expression per ``Sample`` field, with ``{class}`` and ``{dc}``.

    ``db_util`` and ``retry_ratio`` are the DC's shared pool: they usually use ``{dc}`` only.
    ``p99_ms`` must come out in milliseconds (e.g. ``1000 * histogram_quantile(...)``).
    """

    share: ClassQuery
    db_util: ClassQuery
    p99_ms: ClassQuery
    error_rate: ClassQuery
    retry_ratio: ClassQuery | None = None
    cache_hit_ratio: ClassQuery | None = None

    def templates(self, allowed: frozenset[str]) -> dict[str, QueryTemplate]:
        """The expressions given, parsed, by ``Sample`` field (absent optional ones left out)."""
        return {name: parse_template(text, allowed)
                for name, text in self.model_dump(exclude_none=True).items()}


class DcQueries(ClassQueries):
    """The DC-level view for ``sample(dc)``: the same fields, with ``{dc}`` only."""

    share: DcQuery
    db_util: DcQuery
    p99_ms: DcQuery
    error_rate: DcQuery
    retry_ratio: DcQuery | None = None
    cache_hit_ratio: DcQuery | None = None


class PrometheusSettings(AdapterSettings):
    """Where each field of a sample comes from, and how long one replica may take."""

    queries: ClassQueries
    dc_queries: DcQueries | None = Field(None, validate_default=True)
    timeout_s: float | None = Field(None, gt=0, le=300)

    @field_validator("dc_queries")
    @classmethod
    def _dc_view_needed(cls, value: DcQueries | None, info: ValidationInfo) -> DcQueries | None:
        """sample(dc) cannot fill {class}: without dc_queries, queries must not use it."""
        queries = info.data.get("queries")
        if value is None and isinstance(queries, ClassQueries):
            using = [name for name, t in queries.templates(CLASS_PLACEHOLDERS).items()
                     if "class" in t.names]
            if using:
                raise ValueError(
                    f"required: queries.{', queries.'.join(using)} use {{class}}, so the "
                    "DC-level sample(dc) needs dc_queries (with {dc} only)"
                )
        return value


# --- the adapter ---------------------------------------------------------------------------


class Point(NamedTuple):
    """One instant query's answer: Prometheus's evaluation time and the value."""

    t: float
    value: float


class PrometheusMetrics:
    """``Metrics`` over Prometheus's HTTP API, replicas tried with failover."""

    def __init__(self, ctx: ToolContext) -> None:
        settings: PrometheusSettings = ctx.settings
        self.tool = ctx.name
        self.timeout_s = settings.timeout_s or ctx.timeout_s
        self._replicas = ctx.replicas
        self.endpoint = ctx.endpoint(timeout=self.timeout_s)
        self._class = settings.queries.templates(CLASS_PLACEHOLDERS)
        self._dc = (settings.dc_queries or settings.queries).templates(DC_PLACEHOLDERS)
        self._ctx = ctx
        self._probes: dict[str, ReplicatedEndpoint] = {}

    async def sample(self, dc: str) -> Sample:
        """The DC-level view: ``dc_queries`` (or ``queries``, which then use only ``{dc}``)."""
        return await self._sample(self._dc, {"dc": dc}, f"dc {dc}")

    async def class_sample(self, traffic_class: str, dc: str) -> Sample:
        """What ``traffic_class``'s users see in ``dc``: ``queries`` with both placeholders."""
        return await self._sample(
            self._class, {"class": traffic_class, "dc": dc}, f"class {traffic_class!r} in {dc}"
        )

    async def query(self, promql: str, *, what: str = "query", target: str = "") -> Point:
        """One instant query, as given (no placeholders): its single finite value.

        ``NoDataError`` for no series or NaN/±Inf, ``PermanentOpsError`` for a refused or
        ambiguous query, ``TransientOpsError`` when no replica answered. A benchmark times this.
        """
        try:
            response = await self.endpoint.request("GET", QUERY_PATH, params={"query": promql})
        except EndpointError as exc:
            raise EndpointError(
                f"{self.tool}: cannot read {what} for {target or 'the estate'} "
                f"(query {promql!r}): {str(exc).removeprefix(f'{self.tool}: ')}",
                tool=self.tool, target=target, errors=exc.errors,
            ) from exc
        return self._point(response, promql, what, target)

    async def probe(self) -> dict[str, bool]:
        """Which replicas say they are ready (``GET /-/ready``) right now, each on its own."""
        dcs = list(self._replicas)
        answers = await asyncio.gather(*(self._ready(dc) for dc in dcs))
        return dict(zip(dcs, answers, strict=True))

    async def aclose(self) -> None:
        probes, self._probes = list(self._probes.values()), {}
        for endpoint in [self.endpoint, *probes]:
            await endpoint.aclose()

    async def _sample(
        self, templates: Mapping[str, QueryTemplate], values: Mapping[str, str], target: str
    ) -> Sample:
        fields = list(templates)
        answers = await asyncio.gather(
            *(self.query(templates[f].render(values), what=f, target=target) for f in fields),
            return_exceptions=True,
        )
        failed = {f: a for f, a in zip(fields, answers, strict=True)
                  if isinstance(a, BaseException)}
        if failed:
            raise _worst(failed)
        points = {f: a for f, a in zip(fields, answers, strict=True) if isinstance(a, Point)}
        return Sample(t=max(p.t for p in points.values()),
                      **{f: p.value for f, p in points.items()})

    def _point(self, response: httpx.Response, promql: str, what: str, target: str) -> Point:
        where = f"{self.tool}: {what} for {target or 'the estate'}"
        by = f"{response.url.scheme}://{response.url.netloc.decode()}"
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "status" not in body:
            raise PermanentOpsError(
                f"{where}: {by} answered HTTP {response.status_code} without a Prometheus API "
                f"body (is the replica address Prometheus's base URL?): {response.text[:200]!r}",
                tool=self.tool, target=target,
            )
        if body["status"] != "success" or response.status_code >= 400:
            raise PermanentOpsError(
                f"{where}: Prometheus refused the query {promql!r} (HTTP {response.status_code}"
                f" {body.get('errorType', 'error')}): {body.get('error', 'no error text')}",
                tool=self.tool, target=target,
            )
        try:
            return _one_value(body["data"], where, promql, self.tool, target)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PermanentOpsError(
                f"{where}: unexpected answer from {by} to {promql!r}: {exc!r}",
                tool=self.tool, target=target,
            ) from exc

    async def _ready(self, dc: str) -> bool:
        endpoint = self._probes.get(dc)
        if endpoint is None:
            # One attempt, and a breaker that never stays open: a probe reports the replica
            # as it is now, not as it was when it last failed.
            policy = EndpointPolicy(max_attempts=1, open_s=0.0)
            endpoint = self._probes[dc] = self._ctx.endpoint(
                {dc: self._replicas[dc]}, timeout=self.timeout_s, policy=policy
            )
        try:
            response = await endpoint.request("GET", READY_PATH)
        except TransientOpsError:
            return False
        return response.status_code == 200


def _one_value(data: Any, where: str, promql: str, tool: str, target: str) -> Point:
    """The single finite value of an instant vector or scalar result."""
    kind = data["resultType"]
    if kind == "scalar":
        ts, raw = data["result"]
    elif kind == "vector":
        result = data["result"]
        if not result:
            raise NoDataError(
                f"{where}: no data: {promql!r} returned no series (hold; never read as 0)",
                tool=tool, target=target,
            )
        if len(result) > 1:
            shown = ", ".join(str(s.get("metric", {})) for s in result[:_MAX_LABELS_SHOWN])
            raise PermanentOpsError(
                f"{where}: ambiguous query {promql!r}: {len(result)} series ({shown}"
                f"{', ...' if len(result) > _MAX_LABELS_SHOWN else ''}); "
                "aggregate it (sum/max by nothing) or match exactly one series",
                tool=tool, target=target,
            )
        ts, raw = result[0]["value"]
    else:
        raise PermanentOpsError(
            f"{where}: {promql!r} returns a {kind}, not one number: use an instant vector "
            "or a scalar expression",
            tool=tool, target=target,
        )
    value = float(raw)
    if not math.isfinite(value):
        raise NoDataError(
            f"{where}: no data: {promql!r} is {raw} (hold; never read as a number)",
            tool=tool, target=target,
        )
    return Point(float(ts), value)


def _worst(failed: Mapping[str, BaseException]) -> BaseException:
    """The error that says most: a bug, then a refusal, then unreachable, then no data."""

    def rank(exc: BaseException) -> int:
        if not isinstance(exc, OpsError):
            return 0
        if isinstance(exc, PermanentOpsError):
            return 1
        return 3 if isinstance(exc, NoDataError) else 2

    fields = sorted(failed, key=lambda f: rank(failed[f]))
    worst = failed[fields[0]]
    if len(fields) > 1:
        worst.add_note(f"also failed: {', '.join(fields[1:])}")
    return worst


ADAPTER = Adapter(
    name="prometheus",
    kinds={ToolKind.metrics: PrometheusMetrics},
    settings=PrometheusSettings,
    summary="Prometheus (metrics): a PromQL instant query per Sample field, with failover",
)
