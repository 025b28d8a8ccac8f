"""ZooKeeper as the config store (feature flags, client retry policy) and a discovery tool.

Layout: ONE standalone ZooKeeper node per DC, not an ensemble. An ensemble stretched over
two DCs loses its quorum with either of them, which is the very day revive runs; separate
nodes keep answering in the surviving DC. The price is that nodes do not replicate each other,
so this adapter does: every write goes to every reachable node (``ReplicaSet.each``) and
succeeds when at least one node took it (a warning names the others; a node that was down
keeps its old values until the next write); reads come from the first node that answers,
the run's own DC first (``ReplicaSet.call``).

Znodes, under paths from the settings:

* ``<flags_path>/<service>/<feature>``: a flag, data ``on``/``off`` (also ``true``/``false``,
  ``1``/``0``) or JSON (``true``, or an object whose ``on`` or ``enabled`` key is a bool;
  its other keys are kept when revive flips it).
* ``<retry_policy_path>``: a ``RetryPolicy`` as JSON; empty or absent means none.

Writes are read-modify-write with the znode's version (``set(..., version=v)``), so a change
made by someone else between our read and our write is never overwritten blindly: on
``BadVersionError`` the write starts again from a fresh read, a bounded number of times,
then gives up with ``ConflictError``.

kazoo is thread-based: nothing here blocks the event loop. Requests use kazoo's ``*_async``
calls whose results are handed to the loop (``call_soon_threadsafe``), waiting for a
connection polls the client's flag, and only stopping a client runs in a worker thread.
Every attempt on a node is bounded by ``timeout_s``: a node whose client cannot connect in
time is a ``Failure``, which counts against its breaker (one that refuses connections fails
at once). The probe (and the ``discovery`` kind) uses the four-letter words ``ruok``
(``imok``) and ``srvr`` (a ``Mode:`` line: the node serves) over a plain socket; the nodes
must whitelist them (``4lw.commands.whitelist=ruok,srvr``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from kazoo.client import KazooClient
from kazoo.exceptions import (
    AuthFailedError,
    BadVersionError,
    ConnectionDropped,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    RequestTimeoutError,
    SessionExpiredError,
    SessionMovedError,
    ThrottledOpError,
    WriterNotClosedException,
    ZookeeperStoppedError,
)
from kazoo.protocol.states import KeeperState
from kazoo.retry import KazooRetry
from pydantic import (
    AfterValidator,
    Field,
    PositiveFloat,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from revive.errors import ConflictError, InputError, PermanentOpsError, TransientOpsError
from revive.ops.models import RetryPolicy
from revive.ops.plugins import Adapter, AdapterSettings, ToolContext
from revive.ops.replicas import Failure, describe, os_failure
from revive.topology.models import ToolKind

log = logging.getLogger("revive.ops.zookeeper")
# kazoo logs a warning on every reconnect attempt (several a second while a DC is down);
# the replica rules already say, once, when a node stops answering.
_CLIENT_LOG = logging.getLogger("revive.ops.zookeeper.client")
_CLIENT_LOG.setLevel(logging.ERROR)

T = TypeVar("T")

DEFAULT_PORT = 2181
#: Errors that say the node or the connection failed, not that ZooKeeper refused.
_TRANSIENT_KAZOO: tuple[type[BaseException], ...] = (
    ConnectionLoss,
    ConnectionDropped,
    SessionExpiredError,  # includes ConnectionClosedError
    SessionMovedError,
    OperationTimeoutError,
    RequestTimeoutError,
    ThrottledOpError,
    ZookeeperStoppedError,
    WriterNotClosedException,
)
#: The interchangeable spellings of a flag's value (lower case).
_ON = frozenset({"on", "true", "1", "yes", "enabled"})
_OFF = frozenset({"off", "false", "0", "no", "disabled"})
#: Keys of a JSON object flag that hold its value, the first present one wins.
_FLAG_KEYS = ("on", "enabled")
_MAX_4LW_REPLY = 64 * 1024
_CONNECT_POLL_S = 0.05


def _znode_path(value: str) -> str:
    """An absolute znode path: ``/a/b``, no empty, ``.`` or ``..`` parts, not ZooKeeper's own."""
    parts = value.split("/")
    if not value.startswith("/") or len(parts) < 2 or any(
        part in ("", ".", "..") or "\x00" in part for part in parts[1:]
    ):
        raise ValueError(f"{value!r} is not an absolute znode path like /revive/flags")
    if parts[1] == "zookeeper":
        raise ValueError(f"{value!r} is under /zookeeper, which ZooKeeper reserves")
    return value


ZnodePath = Annotated[str, AfterValidator(_znode_path)]


class ZooKeeperSettings(AdapterSettings):
    """Where flags and the retry policy live, and how long an attempt on one node may take."""

    flags_path: ZnodePath = "/revive/flags"
    retry_policy_path: ZnodePath = "/revive/retry-policy"
    timeout_s: PositiveFloat | None = None
    """Bound on one attempt on one node (connecting included); default: the run's timeout."""
    session_timeout_s: float = Field(10.0, ge=1.0, le=600.0)
    """kazoo's session timeout; also how long a stalled connection handshake can last."""
    write_attempts: int = Field(5, ge=1, le=50)
    """Read-modify-write rounds on one node before a concurrent writer makes it a conflict."""

    @field_validator("retry_policy_path")
    @classmethod
    def _outside_flags(cls, value: str, info: ValidationInfo) -> str:
        flags = info.data.get("flags_path")
        if flags and (value == flags or value.startswith(flags + "/")):
            raise ValueError(f"{value!r} is inside flags_path {flags!r}: it would read as a flag")
        return value


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``zk://host:port`` (port 2181 when left out) -> (host, port)."""
    text = address.strip()
    if "://" not in text:
        text = f"zk://{text}"
    try:
        parts = urlsplit(text)
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise InputError(f"ZooKeeper address {address!r}: {exc}") from exc
    if parts.scheme != "zk" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise InputError(f"ZooKeeper address {address!r} is not host:port or zk://host:port")
    return parts.hostname, port


def parse_flag(data: bytes) -> bool | None:
    """A flag's value from its znode data; None when it does not say on or off."""
    text = data.decode("utf-8", "replace").strip()
    if text.lower() in _ON:
        return True
    if text.lower() in _OFF:
        return False
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict):
        value = next((value[k] for k in _FLAG_KEYS if isinstance(value.get(k), bool)), None)
    return value if isinstance(value, bool) else None


def flag_data(old: bytes | None, on: bool) -> bytes:
    """What to write for a flag that holds ``old``: unchanged if it already says ``on``.

    A JSON object keeps its other keys (owner, description...): only its value key changes.
    """
    if old is not None:
        try:
            value = json.loads(old)
        except ValueError:
            value = None
        if isinstance(value, dict):
            key = next((k for k in _FLAG_KEYS if isinstance(value.get(k), bool)), _FLAG_KEYS[0])
            if value.get(key) is on:
                return old
            return json.dumps({**value, key: on}, separators=(",", ":")).encode()
        if parse_flag(old) is on:
            return old
    return b"on" if on else b"off"


def policy_data(old: bytes | None, policy: RetryPolicy | None) -> bytes | None:
    """What the retry-policy znode should hold (None: absent); ``old`` when already right."""
    if policy is None:
        return old if not (old or b"").strip() else None
    if old:
        with contextlib.suppress(ValidationError):
            if RetryPolicy.model_validate_json(old) == policy:
                return old
    return policy.model_dump_json().encode()


def parse_policy(data: bytes | None) -> RetryPolicy | None:
    """The retry policy a znode holds; None when absent or empty."""
    if not (data or b"").strip():
        return None
    return RetryPolicy.model_validate_json(data or b"")


async def _result(pending: Any) -> Any:
    """Await a kazoo ``IAsyncResult`` on the event loop, without a thread waiting on it.

    kazoo sets the result in its own threads; the value (or exception) is handed to the loop.
    If the awaiting task was cancelled (a timeout), the late result is dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(done: Any) -> None:
        if future.done():
            return
        try:
            value = done.get(block=False)
        except BaseException as exc:  # kazoo's error for this request, handed on as is
            future.set_exception(exc)
        else:
            future.set_result(value)

    def ready(done: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, done)

    pending.rawlink(ready)
    return await future


async def _all(pending: list[Awaitable[T]]) -> list[T]:
    """Await them all concurrently; the first error is raised once all have finished."""
    results = await asyncio.gather(*pending, return_exceptions=True)
    for item in results:
        if isinstance(item, BaseException):
            raise item
    return results  # type: ignore[return-value]


async def _children(client: KazooClient, path: str) -> list[str]:
    try:
        return sorted(await _result(client.get_children_async(path)))
    except NoNodeError:
        return []


async def _data(client: KazooClient, path: str) -> bytes | None:
    try:
        data, _stat = await _result(client.get_async(path))
    except NoNodeError:
        return None
    return data or b""


async def four_letter(host: str, port: int, word: str) -> str:
    """Send a four-letter word and read the reply to EOF (the server closes after it)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(word.encode("ascii"))
        await writer.drain()
        reply = await reader.read(_MAX_4LW_REPLY)
        while reply and len(reply) < _MAX_4LW_REPLY and (more := await reader.read(4096)):
            reply += more
        return reply.decode("utf-8", "replace")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


ClientFactory = Callable[[str], KazooClient]


class ZooKeeperStore:
    """``ConfigStore`` over one standalone node per DC; also the probe of the discovery kind."""

    def __init__(self, ctx: ToolContext, *, client_factory: ClientFactory | None = None) -> None:
        settings: ZooKeeperSettings = ctx.settings
        self.tool = ctx.name
        self.settings = settings
        self.timeout_s = settings.timeout_s or ctx.timeout_s
        self.addresses = {dc: parse_address(addr) for dc, addr in ctx.replicas.items()}
        self.set = ctx.replica_set(self.addresses)
        self._factory = client_factory or self._new_client
        self._clients: dict[str, KazooClient] = {}
        self._closed = False

    # --- ConfigStore ---------------------------------------------------------------------

    async def flags(self) -> dict[tuple[str, str], bool]:
        """Every flag, from the first node that answers (the run's DC first)."""
        return await self.set.call(
            lambda dc: self._attempt(dc, self._read_flags), what="read feature flags",
            idempotent=True,
        )

    async def set_flag(self, service: str, feature: str, on: bool) -> None:
        """Turn a flag on or off on every reachable node (created when missing)."""
        for part in (service, feature):
            if not part or "/" in part or "\x00" in part or part in (".", ".."):
                raise PermanentOpsError(
                    f"{self.tool}: {part!r} cannot be a znode name (flag {service}/{feature})",
                    tool=self.tool, target=f"{service}/{feature}",
                )
        path = f"{self.settings.flags_path}/{service}/{feature}"
        await self._write_everywhere(
            path, lambda old: flag_data(old, on), what=f"set flag {service}/{feature}={on}",
        )

    async def set_retry_policy(self, policy: RetryPolicy | None) -> None:
        """Write the client retry policy on every reachable node; None deletes it."""
        what = "clear the retry policy" if policy is None else "set the retry policy"
        await self._write_everywhere(
            self.settings.retry_policy_path, lambda old: policy_data(old, policy), what=what,
        )

    async def retry_policy(self) -> RetryPolicy | None:
        """The retry policy as the first answering node has it (for checks and the lab)."""
        path = self.settings.retry_policy_path

        async def read(client: KazooClient) -> RetryPolicy | None:
            data = await _data(client, path)
            try:
                return parse_policy(data)
            except ValidationError as exc:
                raise PermanentOpsError(
                    f"{self.tool}: {path} does not hold a valid retry policy: {exc}",
                    tool=self.tool, target=path,
                ) from exc

        return await self.set.call(lambda dc: self._attempt(dc, read),
                                   what="read the retry policy", idempotent=True)

    # --- probe (ToolHealth, discovery) ---------------------------------------------------

    async def probe(self) -> dict[str, bool]:
        """Each node's answer right now: ``ruok`` -> ``imok`` and ``srvr`` shows it serving."""

        async def attempt(dc: str) -> bool | Failure:
            host, port = self.addresses[dc]
            try:
                async with asyncio.timeout(self.timeout_s):
                    if await four_letter(host, port, "ruok") != "imok":
                        return False
                    return "Mode:" in await four_letter(host, port, "srvr")
            except TimeoutError as exc:
                return Failure(f"no answer to ruok/srvr within {self.timeout_s:g} s", exc)
            except OSError as exc:
                return os_failure(exc)

        results = await self.set.each(attempt, what="probe (ruok, srvr)")
        return {dc: results.get(dc) is True for dc in self.addresses}

    async def aclose(self) -> None:
        """Stop every node's client (ending its session); the store cannot be used after."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(asyncio.to_thread(_stop, client) for client in clients))

    # --- one node ------------------------------------------------------------------------

    def _new_client(self, hosts: str) -> KazooClient:
        # Reconnect forever (until stopped) with a short backoff, so a node that comes back
        # is used again soon; kazoo's default backoff grows to an hour.
        retry = KazooRetry(max_tries=-1, delay=0.1, max_delay=2.0)
        return KazooClient(hosts=hosts, timeout=self.settings.session_timeout_s,
                           connection_retry=retry, logger=_CLIENT_LOG)

    async def _connected(self, dc: str) -> KazooClient | Failure:
        """``dc``'s client, started on first use; a Failure if it is not connected in time."""
        if self._closed:
            raise RuntimeError(f"ops tool {self.tool!r}: the ZooKeeper store is closed")
        client = self._clients.get(dc)
        if client is not None and client.client_state in (KeeperState.AUTH_FAILED,
                                                          KeeperState.CLOSED):
            # kazoo gave up on this session for good: start over with a new client.
            del self._clients[dc]
            await asyncio.to_thread(_stop, client)
            client = None
        if client is None:
            host, port = self.addresses[dc]
            client = self._clients[dc] = self._factory(f"{host}:{port}")
            client.start_async()  # kazoo's own threads connect, and reconnect, in the background
        if client.connected:
            return client
        host, port = self.addresses[dc]
        # kazoo keeps retrying a refused connection without telling us; a connection of our
        # own says at once that nothing listens there, so failover need not wait the timeout.
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            return os_failure(exc)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        # kazoo connects in its own thread; polling its flag keeps no thread waiting here.
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while not client.connected:
            if asyncio.get_running_loop().time() >= deadline:
                return Failure(
                    f"no ZooKeeper session with {host}:{port} within {self.timeout_s:g} s",
                    TimeoutError(f"{host}:{port}"), counts=True, unsent=True,
                )
            await asyncio.sleep(_CONNECT_POLL_S)
        return client

    async def _attempt(
        self, dc: str, operation: Callable[[KazooClient], Awaitable[T]]
    ) -> T | Failure:
        """Run ``operation`` on ``dc``'s node within the timeout, classifying what went wrong.

        Node or connection trouble is a ``Failure``; ZooKeeper refusing (no permission, a
        malformed request) raises ``PermanentOpsError``.
        """
        try:
            async with asyncio.timeout(self.timeout_s):
                client = await self._connected(dc)
                if isinstance(client, Failure):
                    return client
                return await operation(client)
        except TimeoutError as exc:
            client = self._clients.get(dc)
            host, port = self.addresses[dc]
            what = "no answer" if client is not None and client.connected else "no session"
            return Failure(f"{what} from {host}:{port} within {self.timeout_s:g} s", exc)
        except _TRANSIENT_KAZOO as exc:
            return Failure(describe(exc), exc)
        except OSError as exc:
            return os_failure(exc)
        except (NoAuthError, AuthFailedError) as exc:
            raise PermanentOpsError(f"{self.tool}: the node in {dc} refused access: "
                                    f"{describe(exc)}", tool=self.tool, target=dc) from exc
        except KazooException as exc:
            raise PermanentOpsError(f"{self.tool}: the node in {dc} refused: {describe(exc)}",
                                    tool=self.tool, target=dc) from exc

    async def _read_flags(self, client: KazooClient) -> dict[tuple[str, str], bool]:
        root = self.settings.flags_path
        services = await _children(client, root)
        features = await _all([_children(client, f"{root}/{s}") for s in services])
        keys = [(s, f) for s, names in zip(services, features, strict=True) for f in names]
        datas = await _all([_data(client, f"{root}/{s}/{f}") for s, f in keys])
        flags: dict[tuple[str, str], bool] = {}
        for (service, feature), data in zip(keys, datas, strict=True):
            if data is None:
                continue  # deleted while we read
            value = parse_flag(data)
            if value is None:
                log.warning("ops tool %s: flag %s/%s holds %r, neither on nor off; ignored",
                            self.tool, service, feature, data[:80],
                            extra={"tool": self.tool})
                continue
            flags[(service, feature)] = value
        return flags

    async def _write_everywhere(
        self, path: str, change: Callable[[bytes | None], bytes | None], *, what: str
    ) -> None:
        """Apply ``change`` on every reachable node; enough when one node took it."""

        async def attempt(dc: str) -> bool | Failure:
            try:
                return await self._attempt(dc, lambda client: self._cas(client, dc, path, change))
            except PermanentOpsError as exc:
                return Failure(str(exc), exc, counts=False, unsent=True)

        results = await self.set.each(attempt, what=what)
        done = [dc for dc, r in results.items() if not isinstance(r, Failure)]
        failed = {dc: r for dc, r in results.items() if isinstance(r, Failure)}
        detail = "; ".join(f"{dc}: {r.reason}" for dc, r in failed.items())
        if done:
            if failed:
                # A node whose circuit is already open was reported when it opened.
                fresh = any(r.counts for r in failed.values())
                log.log(
                    logging.WARNING if fresh else logging.INFO,
                    "ops tool %s: %s reached %s but not %s (%s); those nodes keep the old "
                    "value until the next write", self.tool, what, ", ".join(done),
                    ", ".join(failed), detail, extra={"tool": self.tool, "path": path},
                )
            return
        refusals = [r.exc for r in failed.values() if isinstance(r.exc, PermanentOpsError)]
        if refusals:
            first = refusals[0]
            raise type(first)(f"{self.tool}: {what} ({path}) refused: {detail}",
                              tool=self.tool, target=path) from first
        raise TransientOpsError(f"{self.tool}: {what} ({path}) reached no node: {detail}",
                                tool=self.tool, target=path)

    async def _cas(
        self, client: KazooClient, dc: str, path: str,
        change: Callable[[bytes | None], bytes | None],
    ) -> bool:
        """Read-modify-write ``path`` on one node with its version; ConflictError if it keeps
        changing under us. Writes nothing when the node already holds the wanted value."""
        for _ in range(self.settings.write_attempts):
            try:
                data, stat = await _result(client.get_async(path))
                old: bytes | None = data or b""
            except NoNodeError:
                old, stat = None, None
            new = change(old)
            if new == old:
                return True
            try:
                if stat is None:
                    await _result(client.create_async(path, new, makepath=True))
                elif new is None:
                    await _result(client.delete_async(path, version=stat.version))
                else:
                    await _result(client.set_async(path, new, version=stat.version))
            except (BadVersionError, NodeExistsError, NoNodeError) as exc:
                log.info("ops tool %s: %s changed in %s between read and write (%s); "
                         "reading it again", self.tool, path, dc, type(exc).__name__,
                         extra={"tool": self.tool, "dc": dc, "path": path})
                continue
            return True
        raise ConflictError(
            f"{self.tool}: {path} in {dc} changed between our read and our write "
            f"{self.settings.write_attempts} times in a row; another writer is busy with it",
            tool=self.tool, target=path,
        )


def _stop(client: KazooClient) -> None:
    """Stop a client's session and threads (blocking: run in a worker thread)."""
    with contextlib.suppress(Exception):  # closing must not fail; the session dies anyway
        client.stop()
    with contextlib.suppress(Exception):
        client.close()


def _store(ctx: ToolContext) -> ZooKeeperStore:
    return ZooKeeperStore(ctx)


ADAPTER = Adapter(
    name="zookeeper",
    kinds={ToolKind.config_store: _store, ToolKind.discovery: _store},
    settings=ZooKeeperSettings,
    summary="ZooKeeper, one node per DC: feature flags and retry policy as znodes "
            "(written to every node), ruok/srvr probes",
)

__all__ = [
    "ADAPTER",
    "ZooKeeperSettings",
    "ZooKeeperStore",
    "flag_data",
    "four_letter",
    "parse_address",
    "parse_flag",
    "parse_policy",
    "policy_data",
]
