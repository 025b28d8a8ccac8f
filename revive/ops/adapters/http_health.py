"""``http-health``: healthy instances per service and DC, as HTTP checks from every DC see them.

Why from every DC: in the seed incident the only health checker burned with its DC, and a
checker in one place cannot tell "the instance is down" from "my path to it is down". This
adapter needs no agent of its own: each replica of the tool is a *vantage point*, either
``direct`` (revive sends the check from where it runs) or the URL of an HTTP forward proxy in
that DC (``http://proxy.dc2:3128``) through which the check is sent, so it leaves from there.

The vote, per instance:

- a checker that cannot be reached at all (its proxy refuses connections, or its circuit
  breaker is open after repeated failures) is *unreachable* and has no vote;
- every reachable checker votes healthy (an answer with an expected status within
  ``timeout_s``) or unhealthy (another status, a refused connection, a timeout, a proxy's
  502 because the instance is unreachable from that DC);
- the instance is healthy when a **strict majority** of the votes say so.

Ties count as unhealthy. With two reachable checkers that disagree (1-1), the instance is
reachable from one DC and not from the other: a partition. The counts feed failover
decisions (is this DC fit to take traffic back?), where over-counting moves users onto
instances some of them cannot reach, while under-counting only makes the runbook hold or
add capacity a little longer. The safe side is the lower count. With no reachable checker
at all, ``healthy`` raises ``TransientOpsError``: "nobody could look" is not "nothing is up".

Checks run concurrently (at most ``concurrency`` in flight per call), each checker's round
through ``ReplicaSet.each`` so a dead proxy gets a circuit breaker like any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from revive.errors import InputError, NotFoundError, TransientOpsError
from revive.ops.plugins import Adapter, AdapterSettings, ToolContext
from revive.ops.replicas import BreakerState, EndpointError, Failure, ReplicaSet, os_failure
from revive.topology.models import ToolKind, Topology

__all__ = [
    "ADAPTER",
    "DIRECT",
    "HttpHealth",
    "HttpHealthSettings",
    "ServiceUrls",
    "majority",
    "parse_status_ranges",
]

#: A checker replica address meaning "check from where revive runs".
DIRECT = "direct"
#: Fields a ``url`` template may use.
TEMPLATE_FIELDS = frozenset({"service", "instance", "index", "dc"})

StatusRange = tuple[int, int]


def parse_status_ranges(value: Any) -> tuple[StatusRange, ...]:
    """``200``, ``"200-299"``, ``"204"`` or a list of them -> inclusive (low, high) ranges."""
    items = value if isinstance(value, list | tuple) and not _is_pair(value) else [value]
    ranges: list[StatusRange] = []
    for item in items:
        if _is_pair(item):
            low, high = int(item[0]), int(item[1])
        elif isinstance(item, int) and not isinstance(item, bool):
            low = high = item
        elif isinstance(item, str):
            text = item.strip()
            low_text, _, high_text = text.partition("-")
            if not low_text.strip().isdigit() or (high_text and not high_text.strip().isdigit()):
                raise ValueError(f"{item!r} is not a status or a range like 200-299")
            low = int(low_text)
            high = int(high_text) if high_text else low
        else:
            raise ValueError(f"{item!r} is not a status or a range like 200-299")
        if not 100 <= low <= high <= 599:
            raise ValueError(f"{item!r}: statuses are 100-599, low before high")
        ranges.append((low, high))
    if not ranges:
        raise ValueError("at least one status or range is needed")
    return tuple(ranges)


def _is_pair(value: Any) -> bool:
    return (isinstance(value, tuple) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))


def _http_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{value!r} is not a URL: {exc}") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def _url_template(value: str) -> str:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid template: {exc}") from None
    unknown = names - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(sorted(unknown))} in {value!r} "
            f"(available: {{{'}, {'.join(sorted(TEMPLATE_FIELDS))}}})"
        )
    _http_url(value.format(service="s", instance=1, index=0, dc="dc"))
    return value


HealthUrl = Annotated[str, AfterValidator(_http_url)]
StatusRanges = Annotated[tuple[tuple[int, int], ...], BeforeValidator(parse_status_ranges)]


class ServiceUrls(AdapterSettings):
    """One service's instance health URLs, per DC."""

    urls: dict[str, list[HealthUrl]]


class HttpHealthSettings(AdapterSettings):
    """``services`` lists URLs per service and DC; ``url`` is a template for the others.

    The template gets ``{service}``, ``{dc}``, ``{instance}`` (1..n) and ``{index}`` (0..n-1),
    n being the service's instances in that DC in the topology; it applies to
    ``template_services`` (default: every service of the topology not under ``services``).
    """

    services: dict[str, ServiceUrls] = Field(default_factory=dict)
    url: Annotated[str, AfterValidator(_url_template)] | None = None
    template_services: list[str] | None = None
    expect_status: StatusRanges = ((200, 299),)
    timeout_s: float = Field(5.0, gt=0, le=300)
    concurrency: int = Field(32, ge=1, le=1024)

    @model_validator(mode="after")
    def _something_to_check(self) -> HttpHealthSettings:
        if not self.services and self.url is None:
            raise ValueError("give `services` (URLs per service and DC) or a `url` template")
        if self.template_services is not None and self.url is None:
            raise ValueError("`template_services` needs a `url` template")
        return self


def majority(votes: Sequence[bool]) -> bool:
    """Healthy only with a strict majority of the votes; ties and no votes are unhealthy."""
    return 2 * sum(votes) > len(votes)


Verdicts = list[bool | None]
"""One checker's round: per URL, True/False, or None when it could not reach its proxy."""


@dataclass
class _Checker:
    """One vantage point: ``direct``, or a forward proxy in its DC."""

    dc: str
    proxy: str | None
    client: httpx.AsyncClient | None = field(default=None, repr=False)

    @property
    def proxy_address(self) -> tuple[str, int] | None:
        if self.proxy is None:
            return None
        url = httpx.URL(self.proxy)
        return url.host, url.port or (443 if url.scheme == "https" else 80)


class HttpHealth:
    """``HealthChecker`` by majority vote of HTTP checks from every checker replica."""

    def __init__(
        self,
        name: str,
        checkers: dict[str, str | None],
        settings: HttpHealthSettings,
        *,
        prefer_dc: str | None = None,
        topology: Topology | None = None,
        replica_set: ReplicaSet | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.topology = topology
        self._checkers = {dc: _Checker(dc, proxy) for dc, proxy in checkers.items()}
        self.replica_set = replica_set or ReplicaSet(name, checkers, prefer_dc=prefer_dc)
        self._limit: asyncio.Semaphore | None = None

    # -- HealthChecker -----------------------------------------------------------------------

    async def healthy(self, dc: str) -> dict[str, int]:
        """Healthy instances per service in ``dc``: a strict majority of reachable checkers."""
        targets = self.targets(dc)
        urls = [url for service_urls in targets.values() for url in service_urls]
        verdicts = await self._rounds(urls, what=f"health checks in {dc}")
        counted: dict[str, int] = {}
        position = 0
        for service, service_urls in targets.items():
            count = 0
            for _ in service_urls:
                votes = [v[position] for v in verdicts.values() if v[position] is not None]
                count += majority([bool(v) for v in votes])
                position += 1
            counted[service] = count
        return counted

    def targets(self, dc: str) -> dict[str, list[str]]:
        """The instance health URLs to check in ``dc``, per service."""
        if self.topology is not None and dc not in self.topology.dc_names:
            raise NotFoundError(f"{self.name}: unknown datacenter {dc!r}", tool=self.name,
                                target=dc)
        found = {name: list(svc.urls[dc]) for name, svc in self.settings.services.items()
                 if dc in svc.urls}
        template = self.settings.url
        if template is not None and self.topology is not None:
            names = self.settings.template_services
            if names is None:
                names = [s.name for s in self.topology.services]
            for name in names:
                if name in found or not self.topology.has_service(name):
                    continue
                n = self.topology.service(name).instances_in(dc)
                if n > 0:
                    found[name] = [template.format(service=name, dc=dc, instance=i + 1, index=i)
                                   for i in range(n)]
        if not found and self.topology is None:
            raise NotFoundError(f"{self.name}: no health URLs for datacenter {dc!r}",
                                tool=self.name, target=dc)
        return found

    # -- probe / close -----------------------------------------------------------------------

    async def probe(self) -> dict[str, bool]:
        """Which checkers can be used now: ``direct`` always; a proxy if it accepts TCP."""
        dcs = list(self._checkers)
        answers = await asyncio.gather(*(self._reach(self._checkers[dc]) for dc in dcs))
        return {dc: answer is None for dc, answer in zip(dcs, answers, strict=True)}

    async def aclose(self) -> None:
        for checker in self._checkers.values():
            client, checker.client = checker.client, None
            if client is not None:
                await client.aclose()

    # -- internals ---------------------------------------------------------------------------

    async def _rounds(self, urls: list[str], *, what: str) -> dict[str, Verdicts]:
        """Every reachable checker's verdicts on ``urls``; ``EndpointError`` if none reached.

        The rounds run concurrently; ``ReplicaSet.each`` then collects them one checker at a
        time, which is where each checker's breaker is consulted and told the outcome.
        """
        rs = self.replica_set
        started: dict[str, asyncio.Task[Verdicts | Failure]] = {
            dc: asyncio.create_task(self._round(dc, urls))
            for dc in rs.order if rs.breaker_state(dc) is not BreakerState.OPEN
        }

        async def attempt(dc: str) -> Verdicts | Failure:
            task = started.pop(dc, None)
            return await (task if task is not None else self._round(dc, urls))

        try:
            outcomes = await rs.each(attempt, what=what)
        finally:
            for task in started.values():  # skipped by a breaker that opened meanwhile
                task.cancel()
            await asyncio.gather(*started.values(), return_exceptions=True)
        reached = {dc: out for dc, out in outcomes.items() if not isinstance(out, Failure)}
        if not reached:
            errors = {dc: out.reason for dc, out in outcomes.items() if isinstance(out, Failure)}
            detail = "; ".join(f"{dc}: {reason}" for dc, reason in errors.items())
            raise EndpointError(f"{self.name}: no health checker reachable for {what} ({detail})",
                                tool=self.name, target=what, errors=errors)
        return reached

    async def _round(self, dc: str, urls: list[str]) -> Verdicts | Failure:
        """One checker's verdicts, or a ``Failure`` when the checker itself is unreachable."""
        checker = self._checkers[dc]
        unreachable = await self._reach(checker)
        if unreachable is not None:
            return unreachable
        verdicts = list(await asyncio.gather(*(self._check(checker, url) for url in urls)))
        if urls and all(v is None for v in verdicts):
            error = TransientOpsError(f"{self.name}: proxy {checker.proxy} refused every check",
                                      tool=self.name, target=dc)
            return Failure(str(error), error)
        return verdicts

    async def _reach(self, checker: _Checker) -> Failure | None:
        """None when the checker can be used; a proxy must accept a TCP connection."""
        address = checker.proxy_address
        if address is None:
            return None
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                _, writer = await asyncio.open_connection(*address)
        except TimeoutError as exc:
            return Failure(f"proxy {checker.proxy}: no connection within "
                           f"{self.settings.timeout_s:g} s", exc)
        except OSError as exc:
            return os_failure(exc)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None

    async def _check(self, checker: _Checker, url: str) -> bool | None:
        """One instance through one checker: healthy, unhealthy, or None (proxy unreachable)."""
        async with self._semaphore():
            client = self._client(checker)
            try:
                async with asyncio.timeout(self.settings.timeout_s):
                    response = await client.get(url)
            except TimeoutError:
                return False
            except httpx.ConnectError:
                # Through a proxy, connecting is connecting to the proxy: no verdict from it.
                return None if checker.proxy is not None else False
            except httpx.HTTPError:
                return False
        status = response.status_code
        return any(low <= status <= high for low, high in self.settings.expect_status)

    def _semaphore(self) -> asyncio.Semaphore:
        if self._limit is None:
            self._limit = asyncio.Semaphore(self.settings.concurrency)
        return self._limit

    def _client(self, checker: _Checker) -> httpx.AsyncClient:
        if checker.client is None:
            checker.client = httpx.AsyncClient(
                proxy=checker.proxy,
                # The outer asyncio.timeout bounds each check; this one only backs it up.
                timeout=httpx.Timeout(self.settings.timeout_s + 1.0),
                trust_env=False,  # a check goes direct or through *this* DC's proxy, no other
                follow_redirects=False,
                limits=httpx.Limits(max_connections=self.settings.concurrency),
                headers={"User-Agent": "revive-health", "X-Revive-Checker": checker.dc},
            )
        return checker.client


def checker_addresses(name: str, replicas: dict[str, str]) -> dict[str, str | None]:
    """DC -> proxy URL (None for ``direct``); ``InputError`` naming a bad replica address."""
    if not replicas:
        raise InputError(f"ops_tools.{name}.replicas: http-health needs at least one checker "
                         f"replica (`{DIRECT}` or an HTTP proxy URL per DC)")
    found: dict[str, str | None] = {}
    for dc, address in replicas.items():
        if address.strip().lower() == DIRECT:
            found[dc] = None
            continue
        try:
            found[dc] = _http_url(address)
        except ValueError:
            raise InputError(
                f"ops_tools.{name}.replicas.{dc}: {address!r} is neither `{DIRECT}` nor an "
                "http(s) proxy URL like http://proxy.dc1:3128"
            ) from None
    return found


def _factory(ctx: ToolContext) -> HttpHealth:
    settings: HttpHealthSettings = ctx.settings
    checkers = checker_addresses(ctx.name, ctx.replicas)
    if settings.url is not None:
        if ctx.topology is None:
            raise InputError(f"ops_tools.{ctx.name}.settings.url: a URL template needs the "
                             "topology (instance counts per DC)")
        unknown = [s for s in settings.template_services or []
                   if not ctx.topology.has_service(s)]
        if unknown:
            raise InputError(f"ops_tools.{ctx.name}.settings.template_services: unknown "
                             f"service(s) {', '.join(unknown)}")
    return HttpHealth(ctx.name, checkers, settings, topology=ctx.topology,
                      replica_set=ctx.replica_set())

ADAPTER = Adapter(
    name="http-health",
    kinds={ToolKind.health_checker: _factory},
    settings=HttpHealthSettings,
    summary="HTTP health URLs per instance, checked from every DC (direct or via a proxy); "
            "strict majority of reachable checkers",
)
