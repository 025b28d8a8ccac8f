"""What a local orchestrator stack is made of: its ports, database, Redis and files.

One ``StackConfig`` decides everything ``revive stack up`` starts, and is kept in
``<dir>/stack.json`` so ``status`` and ``down`` act on the stack that is running, whatever
options they are given. Ports are counted from ``port_base``: the load balancer (the one
API URL clients use) on ``port_base``, API replica *i* on ``port_base + i``, supervisord's
XML-RPC after them. The Prefect settings every process shares are ``prefect_env``; they put
every piece of shared state in PostgreSQL or Redis, since anything left on an in-memory
default (docket, leases, event ordering) would silently become per-replica.
"""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import make_url

from revive.render import render

DEFAULT_DIR = Path(".revive") / "stack"
DEFAULT_PORT_BASE = 4200
DEFAULT_BOARD_PORT = 8800
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/revive_prefect"
#: Database 0 is everybody's default: the stack keeps to its own.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/1"
REPLICAS = 2
#: A scheduled deployment run is picked up within this many seconds (Prefect's default: 10).
WORKER_QUERY_SECONDS = 1
#: Heartbeats of runs the workers start; the zombie automation expects one every 90 s.
HEARTBEAT_SECONDS = 30
STATE_FILE = "stack.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class StackConfig(BaseModel):
    """Everything that identifies one running stack (kept in ``stack.json``)."""

    dir: Path = Field(description="Where configs, logs and PREFECT_HOME live.")
    repo: Path = Field(description="The checkout the workers run flows from (REVIVE_HOME).")
    topology: Path
    pools: list[str] = Field(min_length=1, description="One work pool (and worker) per DC.")
    port_base: int = Field(DEFAULT_PORT_BASE, ge=1024, le=65535 - REPLICAS - 1)
    board_port: int = Field(DEFAULT_BOARD_PORT, ge=1, le=65535)
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    python: str = Field(default_factory=lambda: sys.executable)
    supervisor_user: str = "revive"
    supervisor_password: str = Field(default_factory=lambda: secrets.token_hex(16))

    @field_validator("pools")
    @classmethod
    def _pool_names(cls, pools: list[str]) -> list[str]:
        for name in pools:
            if not _NAME.match(name):
                raise ValueError(f"DC {name!r} cannot name a work pool and a supervisord "
                                 "program (letters, digits, '_', '.', '-')")
        return pools

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, url: str) -> str:
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql" or not parsed.database:
            raise ValueError("the Prefect database must be a PostgreSQL URL naming a database "
                             "(postgresql+asyncpg://user@host:port/db): replicas share it")
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, url: str) -> str:
        parts = urlsplit(url)
        db = parts.path.lstrip("/")
        if parts.scheme != "redis" or not parts.hostname or not (db == "" or db.isdigit()):
            raise ValueError("Redis must be a redis://host:port/db URL")
        return url

    # --- derived ---------------------------------------------------------------------------

    @property
    def lb_port(self) -> int:
        return self.port_base

    @property
    def replica_ports(self) -> list[int]:
        return [self.port_base + i for i in range(1, REPLICAS + 1)]

    @property
    def supervisor_port(self) -> int:
        return self.port_base + REPLICAS + 1

    @property
    def ports(self) -> list[int]:
        """Every port the stack listens on."""
        return [self.lb_port, *self.replica_ports, self.supervisor_port, self.board_port]

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    @property
    def board_url(self) -> str:
        return f"http://127.0.0.1:{self.board_port}"

    @property
    def database_name(self) -> str:
        return str(make_url(self.database_url).database)

    @property
    def admin_dsn(self) -> str:
        """libpq DSN of the same server's ``postgres`` database (to create ours)."""
        return make_url(self.database_url).set(
            drivername="postgresql", database="postgres").render_as_string(hide_password=False)

    @property
    def redis(self) -> tuple[str, int, int]:
        parts = urlsplit(self.redis_url)
        db = parts.path.lstrip("/")
        return str(parts.hostname), parts.port or 6379, int(db or 0)

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def supervisor_conf(self) -> Path:
        return self.dir / "supervisord.conf"

    @property
    def haproxy_cfg(self) -> Path:
        return self.dir / "haproxy.cfg"

    @property
    def admin_socket(self) -> Path:
        return self.dir / "haproxy.sock"

    def bin(self, name: str) -> str:
        """A console script installed next to this Python (prefect, revive)."""
        return str(Path(self.python).with_name(name))

    def prefect_env(self) -> dict[str, str]:
        """The settings every process of the stack shares (servers, services, workers)."""
        host, port, db = self.redis
        return {
            "REVIVE_STACK": str(self.dir),  # marks our processes, flow runs included (down)
            "REVIVE_HOME": str(self.repo),
            "REVIVE_TOPOLOGY": str(self.topology),
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": self.api_url,  # the UI in a browser calls the LB too
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url,
            "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",  # `up` migrates once, first
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_SERVER_DOCKET_URL": self.redis_url,
            "PREFECT_SERVER_DOCKET_NAME": f"revive-{self.database_name}",
            "PREFECT_REDIS_MESSAGING_HOST": host,
            "PREFECT_REDIS_MESSAGING_PORT": str(port),
            "PREFECT_REDIS_MESSAGING_DB": str(db),
            "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
        }


def supervisor_value(value: str) -> str:
    """``value`` quoted for a supervisord ``environment=`` (``%`` is its expansion)."""
    if '"' in value or "\n" in value:
        raise ValueError(f"cannot pass {value!r} through supervisord's environment")
    return '"' + value.replace("%", "%%") + '"'


def program_name(pool: str) -> str:
    return f"worker-{pool}"


def supervisord_text(config: StackConfig) -> str:
    """``supervisord.conf``: every program of the stack, none started until asked."""
    env = ",".join(f"{k}={supervisor_value(v)}" for k, v in config.prefect_env().items())
    return render(
        "stack/supervisord.conf.j2", c=config, environment=env,
        workers=[(program_name(p), p) for p in config.pools],
        haproxy=_haproxy_path(), dir=config.dir,
    )


def haproxy_text(config: StackConfig, *, admin_socket: bool) -> str:
    return render("stack/haproxy.cfg.j2", c=config,
                  admin_socket=config.admin_socket if admin_socket else None)


def _haproxy_path() -> str:
    from revive.lab.daemon import program

    return program("haproxy", paths=("/usr/sbin/haproxy",))
