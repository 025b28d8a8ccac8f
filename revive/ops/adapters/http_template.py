"""``http-template``: any tool kind wired from YAML, one templated HTTP request per method.

Why: every team's GSLB, cloud or deploy API differs a little, and most need nothing but
"send this request, read that field". Writing Python for each (and reviewing it) costs more
than a few lines of topology. Each method of the tool kind's Protocol
(``revive.ops.interfaces``) gets a call under ``settings.calls``::

    calls:
      set_class_weights:
        method: PUT
        url: "/api/v1/classes/{{ traffic_class | urlencode }}"
        body: {weights: "{{ weights }}"}          # a whole-leaf expression keeps its type
        success: "status == 200 and json.ok"
        idempotent: true
      class_weights: {url: /api/v1/classes, result: data.classes}

Templates run in Jinja2's ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: they
see the method's arguments by name (and ``status``, ``json``, ``text`` of the answer in
``success``/``result_expr``), never the environment. Secrets reach a request only as headers
named in ``headers_env`` (header -> environment variable), read when the call is made.
Templates are checked when the topology is: they parse, use only the variables their method
has, and touch no ``_private`` attribute (the sandbox refuses any other escape at render).

Requests go through the tool's ``ReplicatedEndpoint`` (local replica first, failover,
breakers, no resend of a non-idempotent request whose outcome is unknown). URLs are relative
to the replica, or start with ``{{ replica }}`` (the same thing). A call whose ``replica_dc``
renders a DC (``"{{ dc }}"``) goes to that DC's replica only: for APIs where the ``dc``
argument names which DC's instance to act on.

Actions: a method returning ``ActionRef`` takes the action id from its result (a string, a
number, or an object's ``id``). Their status comes from the optional ``action_status`` call
(variable ``ref``: id, kind, target, tool), whose result is a state mapped through
``states`` (default: running/done/failed); without it an action is done once its request
succeeded (a synchronous API). ``request_id`` is passed to templates so that an API's own
idempotency key (a header, a body field) makes a resent request start nothing new.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import jinja2
from jinja2 import StrictUndefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import (
    BaseModel,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from revive.errors import (
    ConflictError,
    InputError,
    NoDataError,
    NotFoundError,
    OpsError,
    PermanentOpsError,
    TransientOpsError,
)
from revive.ops import interfaces
from revive.ops.endpoint import ReplicatedEndpoint
from revive.ops.models import ActionRef, ActionState, ActionStatus, ServiceState
from revive.ops.plugins import Adapter, AdapterSettings, Factory, ToolContext, secret
from revive.ramp import Sample
from revive.topology.models import ToolKind

__all__ = [
    "ADAPTER",
    "ENV",
    "EXTRA_CALLS",
    "KIND_PROTOCOLS",
    "METHODS",
    "HttpTemplateSettings",
    "MethodSpec",
    "TemplateCall",
    "TemplateTool",
    "required_calls",
    "template_problems",
]

#: The largest string or list a template may build by repetition, the largest exponent.
MAX_REPEAT, MAX_EXPONENT = 100_000, 1_000


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, also refusing ``'x' * 10**9``-style memory bombs."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise jinja2.sandbox.SecurityError(f"exponent {right} is too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (isinstance(seq, str | list | tuple) and isinstance(n, int)
                        and len(seq) * n > MAX_REPEAT):
                    raise jinja2.sandbox.SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


#: The only Jinja2 environment templates ever see: sandboxed, immutable, strict.
ENV = _Sandbox(undefined=StrictUndefined, autoescape=False)

#: Tool kind -> the Protocol its adapter implements (None: only ``probe``, a boot-time tool).
KIND_PROTOCOLS: dict[ToolKind, type | None] = {
    ToolKind.compute: interfaces.Compute,
    ToolKind.deploy: interfaces.ServiceControl,
    ToolKind.registry: interfaces.Registry,
    ToolKind.health_checker: interfaces.HealthChecker,
    ToolKind.traffic: interfaces.Traffic,
    ToolKind.metrics: interfaces.Metrics,
    ToolKind.config_store: interfaces.ConfigStore,
    ToolKind.secret_store: None,
    ToolKind.discovery: None,
}

#: Optional calls any kind may add, with their template variables.
EXTRA_CALLS: dict[str, tuple[str, ...]] = {"action_status": ("ref",), "probe": ("dc",)}
#: Variables of ``success`` and ``result_expr``, besides the method's arguments.
RESPONSE_VARIABLES = ("status", "json", "text")
DEFAULT_SUCCESS = "200 <= status < 300"
_EXCERPT = 200
_REPLICA_PREFIX = re.compile(r"^\s*\{\{-?\s*replica\s*-?\}\}")
_SCHEME = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.S)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class MethodSpec:
    """One Protocol method: its signature (with ``self``), argument names, return type."""

    name: str
    signature: inspect.Signature
    params: tuple[str, ...]
    returns: Any
    adapter: TypeAdapter[Any] | None


def _specs(protocol: type) -> dict[str, MethodSpec]:
    found: dict[str, MethodSpec] = {}
    for name, func in vars(protocol).items():
        if name.startswith("_") or name == "aclose" or not inspect.iscoroutinefunction(func):
            continue
        signature = inspect.signature(func)
        returns = typing.get_type_hints(func)["return"]
        plain = returns in (type(None), ActionRef)
        found[name] = MethodSpec(
            name, signature, tuple(p for p in signature.parameters if p != "self"), returns,
            None if plain else TypeAdapter(returns),
        )
    return found


#: Every Protocol method of every kind, by name (the names are unique across kinds).
METHODS: dict[str, MethodSpec] = {
    name: spec for proto in dict.fromkeys(p for p in KIND_PROTOCOLS.values() if p)
    for name, spec in _specs(proto).items()
}


def required_calls(kind: ToolKind) -> tuple[str, ...]:
    """The calls a tool of ``kind`` must define: its Protocol's methods."""
    proto = KIND_PROTOCOLS.get(kind)
    return tuple(_specs(proto)) if proto else ()


def call_variables(call: str) -> tuple[str, ...]:
    """The template variables of a call: its method's arguments."""
    if call in EXTRA_CALLS:
        return EXTRA_CALLS[call]
    return METHODS[call].params


# -- template checks ------------------------------------------------------------------------


def template_problems(source: str, allowed: set[str], *, expression: bool = False) -> list[str]:
    """Why ``source`` is refused: it does not parse, uses unknown variables, or reaches for a
    ``_private`` attribute (the usual first step of a sandbox escape)."""
    try:
        if expression:
            ENV.compile_expression(source)
            tree = ENV.parse("{{ (" + source + ") }}")
        else:
            ENV.from_string(source)
            tree = ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return [f"does not parse: {exc.message} (line {exc.lineno}) in {source!r}"]
    problems: list[str] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        attr = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) else None)
        if isinstance(attr, str) and attr.startswith("_"):
            problems.append(f"refused: access to the private attribute {attr!r} in {source!r}")
    unknown = meta.find_undeclared_variables(tree) - allowed - set(ENV.globals)
    if unknown:
        problems.append(f"unknown variable(s) {', '.join(sorted(unknown))} in {source!r} "
                        f"(available: {', '.join(sorted(allowed)) or 'none'})")
    return problems


def _whole_expression(source: str) -> str | None:
    """The expression of a ``"{{ expr }}"`` leaf (rendered with its type kept), else None."""
    match = _WHOLE_EXPRESSION.match(source)
    if match is None:
        return None
    expr = match.group("expr").strip("-").strip()
    try:
        ENV.compile_expression(expr)
    except jinja2.TemplateSyntaxError:
        return None  # e.g. "{{ a }}-{{ b }}": a text template
    return expr


# -- settings --------------------------------------------------------------------------------

HttpVerb = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


class TemplateCall(AdapterSettings):
    """One method's request: templates for URL, headers and body; how to read the answer."""

    method: HttpVerb = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    headers_env: dict[str, str] = Field(default_factory=dict)
    """Header -> environment variable holding its value (a token), read at call time."""
    body: JsonValue = None
    """A JSON structure whose string leaves are templates, or one template (``body_type``)."""
    body_type: Literal["json", "text"] = "json"
    success: str = DEFAULT_SUCCESS
    result: str | None = Field(None, pattern=r"^[^.\s]+(\.[^.\s]+)*$")
    result_expr: str | None = None
    idempotent: bool | None = None
    """Safe to resend after an unknown outcome; default: what the HTTP method says."""
    replica_dc: str | None = None
    """A template naming the DC whose replica alone must take the call (``"{{ dc }}"``)."""
    states: dict[str, Literal["running", "done", "failed"]] = Field(default_factory=dict)
    """For ``action_status``: the API's state names -> running/done/failed."""

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers_env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_env_names(value)


def _check_env_names(value: dict[str, str]) -> dict[str, str]:
    bad = [name for name in value.values() if not _ENV_NAME.match(name)]
    if bad:
        raise ValueError(f"not an environment variable name: {', '.join(map(repr, bad))}")
    return value


class HttpTemplateSettings(AdapterSettings):
    """``calls``: one request template per method of the tool's kind (see the module doc)."""

    calls: dict[str, TemplateCall]
    headers: dict[str, str] = Field(default_factory=dict)
    """Literal headers sent with every call (no templates)."""
    headers_env: dict[str, str] = Field(default_factory=dict)
    """Header -> environment variable, for every call (a call's own ``headers_env`` wins)."""
    timeout_s: float | None = Field(None, gt=0, le=600)
    """Per request; default: the run's ops-tool timeout."""
    probe_timeout_s: float = Field(5.0, gt=0, le=60)

    @field_validator("headers_env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_env_names(value)

    @model_validator(mode="after")
    def _templates(self) -> HttpTemplateSettings:
        errors = [
            InitErrorDetails(type=PydanticCustomError("template", "{detail}", {"detail": why}),
                             loc=("calls", *loc), input=value)
            for loc, why, value in _call_problems(self.calls)
        ]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


Problem = tuple[tuple[str, ...], str, Any]


def _call_problems(calls: Mapping[str, TemplateCall]) -> list[Problem]:
    """(location under ``calls``, why, the value) for every refused call or template."""
    known = sorted([*METHODS, *EXTRA_CALLS])
    found: list[Problem] = []
    for name, call in calls.items():
        if name not in METHODS and name not in EXTRA_CALLS:
            found.append(((name,), f"unknown method {name!r} (known: {', '.join(known)})", name))
        else:
            found.extend(((name, *loc), why, value) for loc, why, value in _problems(name, call))
    return found


def _problems(name: str, call: TemplateCall) -> list[Problem]:
    """What is wrong with the call ``name`` (locations relative to it)."""
    args = set(call_variables(name))
    answer = args | set(RESPONSE_VARIABLES)
    url = _REPLICA_PREFIX.sub("", call.url, count=1)
    sources: list[tuple[tuple[str, ...], str, set[str], bool]] = [
        (("url",), url, args, False),
        *[(("headers", h), v, args, False) for h, v in call.headers.items()],
        *[(loc, v, args, False) for loc, v in _body_templates(call.body, ("body",))],
        (("success",), call.success, answer, True),
    ]
    if call.result_expr is not None:
        sources.append((("result_expr",), call.result_expr, answer, True))
    if call.replica_dc is not None:
        sources.append((("replica_dc",), call.replica_dc, args, False))
    found: list[Problem] = [
        (loc, why, source) for loc, source, allowed, expression in sources
        for why in template_problems(source, allowed, expression=expression)
    ]
    if _SCHEME.match(url):
        found.append((("url",), "must be relative to the replica or start with {{ replica }}: "
                      "an absolute URL would bypass the tool's replicas", call.url))
    if call.result_expr is not None and call.result is not None:
        found.append((("result_expr",), "give `result` or `result_expr`, not both",
                      call.result_expr))
    if call.states and name != "action_status":
        found.append((("states",), "only the action_status call maps states", call.states))
    if call.body_type == "text" and not isinstance(call.body, str):
        found.append((("body_type",), "a text body is one template string", call.body_type))
    if call.body is not None and call.method in {"GET", "HEAD"}:
        found.append((("body",), f"a {call.method} request has no body", call.body))
    return found


def _body_templates(body: Any, loc: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    if isinstance(body, str):
        return [(loc, body)]
    if isinstance(body, Mapping):
        return [item for key, value in body.items()
                for item in _body_templates(value, (*loc, str(key)))]
    if isinstance(body, list):
        return [item for i, value in enumerate(body)
                for item in _body_templates(value, (*loc, str(i)))]
    return []


# -- rendering -------------------------------------------------------------------------------


class _Renderer:
    """Renders one tool's templates; every template error becomes a ``PermanentOpsError``."""

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self._templates: dict[str, jinja2.Template] = {}
        self._expressions: dict[str, Any] = {}

    def text(self, source: str, variables: Mapping[str, Any], where: str) -> str:
        template = self._templates.get(source)
        if template is None:
            template = self._templates[source] = ENV.from_string(source)
        return self._guard(lambda: template.render(variables), where)

    def value(self, source: str, variables: Mapping[str, Any], where: str) -> Any:
        compiled = self._expressions.get(source)
        if compiled is None:
            compiled = self._expressions[source] = ENV.compile_expression(
                source, undefined_to_none=False)

        def evaluate() -> Any:
            result = compiled(**variables)
            if isinstance(result, jinja2.Undefined):
                str(result)  # StrictUndefined: raises, naming what is missing
            return result

        return self._guard(evaluate, where)

    def body(self, body: Any, variables: Mapping[str, Any], where: str) -> Any:
        """A JSON structure with each string leaf rendered (a whole ``{{ x }}`` keeps type)."""
        if isinstance(body, str):
            expr = _whole_expression(body)
            if expr is not None:
                return _plain(self.value(expr, variables, where))
            return self.text(body, variables, where)
        if isinstance(body, Mapping):
            return {k: self.body(v, variables, f"{where}.{k}") for k, v in body.items()}
        if isinstance(body, list):
            return [self.body(v, variables, f"{where}.{i}") for i, v in enumerate(body)]
        return body

    def _guard(self, render: typing.Callable[[], Any], where: str) -> Any:
        try:
            return render()
        except jinja2.sandbox.SecurityError as exc:
            raise PermanentOpsError(f"{self.tool}: {where}: refused by the template sandbox: "
                                    f"{exc}", tool=self.tool, target=where) from None
        except Exception as exc:  # any error of a user's template is a configuration error
            raise PermanentOpsError(f"{self.tool}: {where}: template error: "
                                    f"{type(exc).__name__}: {exc}", tool=self.tool,
                                    target=where) from None


def _plain(value: Any) -> Any:
    """Template values made JSON-ready (Jinja may hand back tuples or Markup)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _variable(value: Any) -> Any:
    """A method argument as templates see it: plain dicts, lists and scalars."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _variable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_variable(v) for v in value]
    return value


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif (isinstance(data, list) and part.lstrip("-").isdigit()
              and -len(data) <= int(part) < len(data)):
            data = data[int(part)]
        else:
            raise LookupError(f"no {part!r} in the answer at {path!r}")
    return data


def _excerpt(response: httpx.Response) -> str:
    text = response.text.strip()
    return text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else "")


def _refusal(status: int) -> type[OpsError]:
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status >= 500:
        return TransientOpsError
    return PermanentOpsError


# -- the adapter -----------------------------------------------------------------------------


class TemplateTool:
    """The calls of one tool; the per-kind classes add the Protocol's methods to it."""

    kind: ToolKind | None = None

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.name = ctx.name
        self.settings: HttpTemplateSettings = ctx.settings
        self._render = _Renderer(ctx.name)
        self._timeout = self.settings.timeout_s or ctx.timeout_s
        self._endpoint: ReplicatedEndpoint | None = None
        self._per_dc: dict[str, ReplicatedEndpoint] = {}

    async def aclose(self) -> None:
        endpoints = [self._endpoint, *self._per_dc.values()]
        self._endpoint, self._per_dc = None, {}
        for endpoint in endpoints:
            if endpoint is not None:
                await endpoint.aclose()

    async def probe(self) -> dict[str, bool]:
        """Which replicas answer now: each through the ``probe`` call (its success), or any
        HTTP answer to ``GET`` on the replica's base URL when there is none."""
        dcs = list(self.ctx.replicas)
        answers = await asyncio.gather(*(self._probe_one(dc) for dc in dcs))
        return dict(zip(dcs, answers, strict=True))

    async def action_status(self, ref: ActionRef) -> ActionStatus:
        """The action's state from the ``action_status`` call; done without one."""
        if "action_status" not in self.settings.calls:
            return ActionStatus(ref=ref, state=ActionState.done)
        call = self.settings.calls["action_status"]
        answer, response = await self._send(
            "action_status", {"ref": ref.model_dump(mode="json")}, target=ref.target)
        error: str | None = None
        if isinstance(answer, Mapping) and "state" in answer:
            error = answer.get("error")
            answer = answer["state"]
        names = {**{s.value: s.value for s in ActionState}, **call.states}
        state = names.get(str(answer))
        if state is None:
            raise PermanentOpsError(
                f"{self.name}: action {ref.id} ({ref.kind} {ref.target}): unknown state "
                f"{answer!r} (map it under calls.action_status.states)",
                tool=self.name, target=ref.target)
        status = ActionState(state)
        if status is ActionState.failed and not error:
            error = _excerpt(response)
        return ActionStatus(ref=ref, state=status,
                            error=str(error) if error is not None else None,
                            ended_at=None if status is ActionState.running else time.time())

    async def _invoke(self, name: str, arguments: dict[str, Any]) -> Any:
        """Render ``name``'s call, send it, check success, convert the result."""
        spec = METHODS[name]
        target = _target(name, arguments)
        # A metrics API without the series (yet) means "hold", never zero.
        missing = NoDataError if spec.returns is Sample else PermanentOpsError
        answer, _ = await self._send(name, arguments, target=target, missing=missing)
        if answer is None and missing is NoDataError:
            raise NoDataError(f"{self.name}: {name}: no data for {target}", tool=self.name,
                              target=target)
        if spec.returns is type(None):
            return None
        if spec.returns is ActionRef:
            return ActionRef(id=self._action_id(name, answer, target), kind=name,
                             target=target, tool=self.name)
        if spec.returns is ServiceState and isinstance(answer, Mapping):
            answer = {"service": arguments["service"], "dc": arguments["dc"], **answer}
        if spec.returns is Sample and isinstance(answer, Mapping):
            answer = {"t": time.time(), **answer}
        if name == "flags":
            answer = _flags(answer)
        assert spec.adapter is not None
        try:
            return spec.adapter.validate_python(answer)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "the result"
            raise PermanentOpsError(
                f"{self.name}: {name}: the result is not a {_type_name(spec.returns)} "
                f"({where}: {first['msg']}; got {str(answer)[:_EXCERPT]})",
                tool=self.name, target=target) from None

    async def _send(
        self, name: str, arguments: Mapping[str, Any], *, target: str,
        endpoint: ReplicatedEndpoint | None = None,
        missing: type[OpsError] = PermanentOpsError,
    ) -> tuple[Any, httpx.Response]:
        """Render, send and check one call; its result (see ``result``) and the response.

        ``missing`` is raised when the ``result`` path is not in the answer."""
        call = self.settings.calls[name]
        variables = {k: _variable(v) for k, v in arguments.items()}
        where = f"settings.calls.{name}"
        url, headers, json_body, content = self._request(call, variables, where, target)
        if endpoint is None:
            endpoint = self._route(call, variables, where, target)
        response = await endpoint.request(
            call.method, url, json=json_body, content=content,
            headers=headers, idempotent=call.idempotent)
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        seen = {**variables, "status": response.status_code, "json": data,
                "text": response.text}
        if not self._render.value(call.success, seen, f"{where}.success"):
            raise _refusal(response.status_code)(
                f"{self.name}: {name} ({call.method} {url}) failed: HTTP "
                f"{response.status_code}, success condition {call.success!r} is false: "
                f"{_excerpt(response)}", tool=self.name, target=target)
        if call.result_expr is not None:
            return self._render.value(call.result_expr, seen, f"{where}.result_expr"), response
        if call.result is not None:
            try:
                return _dig(data, call.result), response
            except LookupError as exc:
                raise missing(f"{self.name}: {name}: {exc} (result: {call.result}): "
                              f"{_excerpt(response)}", tool=self.name, target=target) from None
        return data, response

    def _request(
        self, call: TemplateCall, variables: Mapping[str, Any], where: str, target: str
    ) -> tuple[str, dict[str, str], Any, bytes | None]:
        """The rendered URL (relative to the replica), headers, JSON body or text content."""
        url = self._render.text(_REPLICA_PREFIX.sub("", call.url, count=1), variables,
                                f"{where}.url")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise PermanentOpsError(f"{self.name}: {where}.url rendered {url!r}: {exc}",
                                    tool=self.name, target=target) from None
        if parsed.scheme or parsed.host:
            raise PermanentOpsError(f"{self.name}: {where}.url rendered {url!r}, which leaves "
                                    "the tool's replicas", tool=self.name, target=target)
        headers = {
            **self._common_headers(),
            **{k: self._render.text(v, variables, f"{where}.headers.{k}")
               for k, v in call.headers.items()},
            **self._secret_headers(call.headers_env, f"{where}.headers_env"),
        }
        if call.body is None:
            return url, headers, None, None
        rendered = self._render.body(call.body, variables, f"{where}.body")
        if call.body_type == "text":
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return url, headers, None, str(rendered).encode()
        if isinstance(call.body, str) and _whole_expression(call.body) is None:
            return url, headers, self._json_text(rendered, where, target), None
        return url, headers, rendered, None

    def _common_headers(self) -> dict[str, str]:
        """The literal ``headers`` and the secrets of ``headers_env`` every call sends."""
        return {**self.settings.headers,
                **self._secret_headers(self.settings.headers_env, "settings.headers_env")}

    def _secret_headers(self, names: Mapping[str, str], where: str) -> dict[str, str]:
        """Header values read from the environment now (a rotated token is picked up)."""
        found: dict[str, str] = {}
        for header, env in names.items():
            token = secret(env=env, what=f"ops_tools.{self.name}.{where}.{header}")
            assert token is not None  # secret() raises when the variable is not set
            found[header] = token.get_secret_value()
        return found

    def _json_text(self, rendered: str, where: str, target: str) -> Any:
        try:
            return json.loads(rendered)
        except ValueError as exc:
            raise PermanentOpsError(f"{self.name}: {where}.body did not render JSON ({exc}): "
                                    f"{rendered[:_EXCERPT]}", tool=self.name,
                                    target=target) from None

    def _route(self, call: TemplateCall, variables: Mapping[str, Any], where: str,
               target: str) -> ReplicatedEndpoint:
        """The tool's replicas with failover, or one DC's replica when ``replica_dc`` says."""
        if call.replica_dc is None:
            if self._endpoint is None:
                self._endpoint = self.ctx.endpoint(timeout=self._timeout)
            return self._endpoint
        dc = self._render.text(call.replica_dc, variables, f"{where}.replica_dc").strip()
        if dc not in self.ctx.replicas:
            raise NotFoundError(f"{self.name}: no replica in {dc!r} (replicas: "
                                f"{', '.join(self.ctx.replicas)})", tool=self.name,
                                target=target)
        return self._single(dc)

    def _single(self, dc: str) -> ReplicatedEndpoint:
        if dc not in self._per_dc:
            self._per_dc[dc] = self.ctx.endpoint({dc: self.ctx.replicas[dc]},
                                                 timeout=self._timeout)
        return self._per_dc[dc]

    async def _probe_one(self, dc: str) -> bool:
        endpoint = self._single(dc)
        try:
            async with asyncio.timeout(self.settings.probe_timeout_s):
                if "probe" in self.settings.calls:
                    await self._send("probe", {"dc": dc}, target=dc, endpoint=endpoint)
                else:
                    await endpoint.request("GET", "", idempotent=True,
                                           headers=self._common_headers())
        except (OpsError, TimeoutError):
            return False
        return True

    def _action_id(self, name: str, answer: Any, target: str) -> str:
        if isinstance(answer, Mapping) and "id" in answer:
            answer = answer["id"]
        if isinstance(answer, str | int) and not isinstance(answer, bool) and str(answer):
            return str(answer)
        raise PermanentOpsError(f"{self.name}: {name}: no action id in the result "
                                f"{str(answer)[:_EXCERPT]!r} (set calls.{name}.result)",
                                tool=self.name, target=target)


def _target(name: str, arguments: Mapping[str, Any]) -> str:
    """What an action or error is about, in the form the simulator's adapters use."""
    if "artifact" in arguments:
        return f"{arguments['artifact']}:{arguments['version']}@{arguments['dst_dc']}" if (
            "dst_dc" in arguments) else f"{arguments['artifact']}:{arguments['version']}"
    if "service" in arguments and "dc" in arguments:
        return f"{arguments['service']}@{arguments['dc']}"
    for key in ("traffic_class", "dc", "service"):
        if key in arguments:
            return str(arguments[key])
    return name


def _flags(answer: Any) -> Any:
    """``{service: {feature: on}}`` or ``[{service, feature, on}]`` -> {(s, f): on}."""
    if isinstance(answer, list):
        return {(str(f.get("service")), str(f.get("feature"))): f.get("on")
                for f in answer if isinstance(f, Mapping)}
    if isinstance(answer, Mapping):
        return {(str(s), str(f)): on for s, features in answer.items()
                if isinstance(features, Mapping) for f, on in features.items()}
    return answer


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _method(spec: MethodSpec) -> Any:
    """A Protocol method with its exact signature, sent through the call named after it."""

    async def method(self: TemplateTool, *args: Any, **kwargs: Any) -> Any:
        bound = spec.signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        return await self._invoke(spec.name, {k: v for k, v in bound.arguments.items()
                                              if k != "self"})

    method.__name__ = method.__qualname__ = spec.name
    method.__signature__ = spec.signature  # type: ignore[attr-defined]
    method.__doc__ = f"``{spec.name}`` through the request template ``calls.{spec.name}``."
    return method


def _tool_class(kind: ToolKind) -> type[TemplateTool]:
    proto = KIND_PROTOCOLS[kind]
    if proto is None:
        return type(f"Template{kind.name.title().replace('_', '')}", (TemplateTool,),
                    {"kind": kind})
    members: dict[str, Any] = {name: _method(spec) for name, spec in _specs(proto).items()}
    members["kind"] = kind
    members["__doc__"] = f"``{proto.__name__}`` over request templates (``http-template``)."
    return type(f"Template{proto.__name__}", (TemplateTool,), members)


#: One class per kind, each implementing its Protocol exactly.
CLASSES: dict[ToolKind, type[TemplateTool]] = {kind: _tool_class(kind) for kind in KIND_PROTOCOLS}


def _factory(kind: ToolKind) -> Factory:
    def make(ctx: ToolContext) -> TemplateTool:
        settings: HttpTemplateSettings = ctx.settings
        base = f"ops_tools.{ctx.name}.settings"
        missing = [m for m in required_calls(kind) if m not in settings.calls]
        if missing:
            raise InputError("; ".join(f"{base}.calls.{m}: required for kind {kind}"
                                       for m in missing))
        if not ctx.replicas:
            raise InputError(f"ops_tools.{ctx.name}.replicas: http-template needs the API's "
                             "base URL per DC")
        # Fail before acting, not half-way: every named secret must be there now.
        for where, names in [(f"{base}.headers_env", settings.headers_env),
                             *[(f"{base}.calls.{m}.headers_env", c.headers_env)
                               for m, c in settings.calls.items()]]:
            for header, env in names.items():
                secret(env=env, what=f"{where}.{header}")
        return CLASSES[kind](ctx)

    return make


ADAPTER = Adapter(
    name="http-template",
    kinds={kind: _factory(kind) for kind in KIND_PROTOCOLS},
    settings=HttpTemplateSettings,
    summary="any kind: one sandboxed Jinja2 request template per method, from YAML",
)
