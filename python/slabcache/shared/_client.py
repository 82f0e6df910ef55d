"""Redis connections for the shared tiers: options, namespaces, errors, a circuit breaker.

Every shared tier talks to Redis through :func:`connect`, which builds a
redis-py client with *its own* socket timeouts and no client-side retries (a
retry would multiply the time a lookup can wait), checks the server with one
command (so a wrong password, an ACL user without rights on the namespace or
an unreachable server fail at construction, as :class:`SharedTierError`), and
through a :class:`CircuitBreaker`, which stops calling a server that keeps
failing and probes it again after a cooldown (reconnecting needs no restart:
redis-py opens a new connection on the next command).

    >>> check_namespace("tenant-a")
    'tenant-a'
    >>> b = CircuitBreaker(failures=2, cooldown_s=60.0)
    >>> b.allow(), b.failure(), b.failure(), b.allow()
    (True, None, None, False)
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgumentError, InvalidTypeError, SharedAuthError, SharedTierError

__all__ = [
    "SharedTierError",
    "SharedAuthError",
    "RedisOptions",
    "CircuitBreaker",
    "check_namespace",
    "connect",
    "key_prefix",
    "TRANSIENT",
    "REROUTED",
    "is_cluster",
]

_NS = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def check_namespace(namespace: str) -> str:
    """``namespace`` if it is a valid tenant name (letters, digits, ``_.:-``, 1-128 chars)."""
    if not isinstance(namespace, str):
        raise InvalidTypeError(f"namespace must be a str, got {type(namespace).__name__}")
    if not _NS.match(namespace):
        raise InvalidArgumentError(f"namespace must be 1-128 of [A-Za-z0-9_.:-], got {namespace!r}")
    return namespace


def key_prefix(namespace: str, kind: str) -> str:
    """``slabcache:{ns}:<kind>:``. The braces are a Redis Cluster hash tag: every key of
    a namespace lands in one slot, so the tiers' Lua scripts may touch several of them.
    An ACL user restricted to ``~slabcache:{ns}:*`` sees only its tenant's keys."""
    return f"slabcache:{{{check_namespace(namespace)}}}:{kind}:"


@dataclass(frozen=True)
class RedisOptions:
    """How a shared tier connects (passed through to redis-py).

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://`` (TLS).
        username, password: ACL user and password (override the URL's).
        lookup_timeout_s: socket timeout of the reads a lookup makes: a lookup
            never waits longer than about twice this for Redis (connect + read).
        write_timeout_s: socket timeout of the background writer.
        connect_timeout_s: TCP connect timeout.
        ssl: extra TLS options for ``rediss://`` (``ssl_ca_certs``, ``ssl_certfile``,
            ``ssl_keyfile``, ``ssl_cert_reqs``, ...), passed to redis-py as given.
        breaker_failures: consecutive failures that open the circuit breaker.
        breaker_cooldown_s: how long an open breaker skips Redis before probing again.
    """

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: str | None = None
    lookup_timeout_s: float = 0.05
    write_timeout_s: float = 0.5
    connect_timeout_s: float = 0.2
    ssl: dict[str, Any] = field(default_factory=dict)
    breaker_failures: int = 3
    breaker_cooldown_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("lookup_timeout_s", "write_timeout_s", "connect_timeout_s",
                     "breaker_cooldown_s"):  # fmt: skip
            v = getattr(self, name)
            if not isinstance(v, int | float) or not v > 0:
                raise InvalidArgumentError(f"{name} must be a positive number, got {v!r}")
        if not isinstance(self.breaker_failures, int) or self.breaker_failures < 1:
            raise InvalidArgumentError("breaker_failures must be an int >= 1")


def _redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise SharedTierError(
            'the shared tier needs redis-py: pip install "slabcache[redis]"'
        ) from exc
    return redis


def _rerouted() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError
    except ImportError:  # pragma: no cover
        return ()
    return (MovedError, AskError, ClusterDownError, TryAgainError)


#: Cluster replies that mean "the namespace's slot is elsewhere now / not served":
#: a cluster tier re-resolves the slot's node; like an outage until then.
REROUTED: tuple[type[BaseException], ...] = _rerouted()


def _transient() -> tuple[type[BaseException], ...]:
    try:
        import redis
    except ImportError:  # pragma: no cover
        return (OSError,)
    return (redis.ConnectionError, redis.TimeoutError, OSError, *REROUTED)


#: Errors that mean "Redis is down or slow" (the tiers degrade to local-only on these).
TRANSIENT: tuple[type[BaseException], ...] = _transient()

_CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster(target: Any) -> bool:
    """Whether ``target`` is a ``redis+cluster://`` / ``rediss+cluster://`` URL."""
    return isinstance(target, str) and target.startswith(_CLUSTER_SCHEMES)


def _cluster_node(url: str, options: RedisOptions, route_key: str) -> tuple[str, int]:
    """The (host, port) of the primary serving ``route_key``'s slot, asked of the
    cluster's seed nodes (``host:port[,host:port...]`` in the URL)."""
    redis = _redis()
    from redis import cluster

    node_of: Any = cluster.ClusterNode  # untyped in redis-py

    scheme, _, rest = url.partition("://")
    hosts, _, _db = rest.partition("/")
    auth, _, hosts = hosts.rpartition("@")
    seeds = []
    for hp in hosts.split(","):
        h, _, p = hp.rpartition(":")
        if not h or not p.isdigit():
            raise InvalidArgumentError(f"cluster URL needs host:port seed nodes, got {url!r}")
        seeds.append(node_of(h, int(p)))
    kw: dict[str, Any] = {"socket_connect_timeout": options.connect_timeout_s,
                          "socket_timeout": options.write_timeout_s}  # fmt: skip
    user, _, pw = auth.partition(":") if auth else ("", "", "")
    if options.username is not None or user:
        kw["username"] = options.username if options.username is not None else user
    if options.password is not None or pw:
        kw["password"] = options.password if options.password is not None else pw
    if scheme.startswith("rediss"):
        kw["ssl"] = True
        kw.update(options.ssl)
    try:
        rc: Any = cluster.RedisCluster(startup_nodes=seeds, **kw)
    except redis.AuthenticationError as exc:
        raise SharedAuthError(f"Redis refused the credentials: {exc}") from exc
    except (*TRANSIENT, redis.RedisClusterException) as exc:
        raise SharedTierError(f"cannot reach the Redis cluster at {hosts}: {exc}") from exc
    try:
        node = rc.get_node_from_key(route_key)
        return str(node.host), int(node.port)
    finally:
        rc.close()


def connect(
    target: Any, options: RedisOptions, socket_timeout_s: float, route_key: str = ""
) -> Any:
    """A redis-py client for ``target`` (a URL or an existing ``redis.Redis``, whose
    connection settings are copied) with ``socket_timeout_s`` and no retries.

    A ``redis+cluster://seed:port[,seed:port]/0`` URL (``rediss+cluster://``: TLS)
    gives a plain client of the cluster primary that serves ``route_key``'s slot:
    every key of a namespace shares one hash tag, so one node holds them all and
    pipelines and Lua scripts work as on a single server."""
    if is_cluster(target):
        host, port = _cluster_node(target, options, route_key)
        scheme, _, rest = target.partition("://")
        auth = rest.partition("/")[0].rpartition("@")[0]
        target = f"{scheme.replace('+cluster', '')}://{auth + '@' if auth else ''}{host}:{port}/0"
    redis = _redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    common: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": options.connect_timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if isinstance(target, str):
        if not target.startswith(("redis://", "rediss://", "unix://")):
            raise InvalidArgumentError(
                f"shared must be a redis://, rediss://, unix://, redis+cluster:// URL or a "
                f"redis.Redis, got {target!r}"
            )
        kw = dict(common)
        if options.username is not None:
            kw["username"] = options.username
        if options.password is not None:
            kw["password"] = options.password
        if target.startswith("rediss://"):
            kw.update(options.ssl)
        return redis.Redis.from_url(target, **kw)
    if isinstance(target, redis.Redis):
        pool = target.connection_pool
        kw = dict(pool.connection_kwargs)
        kw.update(common)
        if options.username is not None:
            kw["username"] = options.username
        if options.password is not None:
            kw["password"] = options.password
        new_pool = redis.ConnectionPool(connection_class=pool.connection_class, **kw)
        return redis.Redis(connection_pool=new_pool)
    raise InvalidTypeError(
        f"shared must be a redis:// URL or a redis.Redis client, got {type(target).__name__}"
    )


def probe(client: Any, probe_key: str) -> dict[str, Any]:
    """One round trip that proves the client can use the namespace: authenticates,
    reads the namespace's probe key (NOPERM if an ACL forbids it) and returns the
    server's ``INFO server`` section. Raises :class:`SharedTierError` /
    :class:`SharedAuthError` with the server's reason."""
    redis = _redis()
    try:
        pipe = client.pipeline(transaction=False)
        pipe.exists(probe_key)
        pipe.info("server")
        _, info = pipe.execute()
        return dict(info)
    except redis.AuthenticationError as exc:
        raise SharedAuthError(f"Redis refused the credentials: {exc}") from exc
    except redis.exceptions.NoPermissionError as exc:
        raise SharedAuthError(f"the Redis ACL user may not use key {probe_key!r}: {exc}") from exc
    except redis.ResponseError as exc:
        msg = str(exc)
        if "NOAUTH" in msg or "WRONGPASS" in msg or "NOPERM" in msg:
            raise SharedAuthError(f"Redis refused access: {msg}") from exc
        raise SharedTierError(f"Redis answered an error: {msg}") from exc
    except TRANSIENT as exc:
        raise SharedTierError(f"cannot reach Redis: {exc}") from exc


class CircuitBreaker:
    """Counts consecutive failures; after ``failures`` of them :meth:`allow` says no
    for ``cooldown_s``, then lets one probe through (half-open). Thread-safe."""

    def __init__(self, failures: int = 3, cooldown_s: float = 1.0) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._count = 0
        self._open_until = 0.0
        self.opened = 0  # how many times it opened

    @property
    def is_open(self) -> bool:
        return self._count >= self.failures and time.monotonic() < self._open_until

    def allow(self) -> bool:
        with self._lock:
            if self._count < self.failures:
                return True
            now = time.monotonic()
            if now >= self._open_until:
                self._open_until = now + self.cooldown_s  # one probe per cooldown
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._count = 0

    def failure(self) -> None:
        with self._lock:
            self._count += 1
            if self._count == self.failures:
                self.opened += 1
                self._open_until = time.monotonic() + self.cooldown_s
            elif self._count > self.failures:
                self._open_until = time.monotonic() + self.cooldown_s
