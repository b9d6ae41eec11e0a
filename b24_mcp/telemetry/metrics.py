"""Prometheus metrics of a team server (`GET /metrics`), recorded only once the HTTP server turns them on.

Until `enable()` every recording function returns at once and `prometheus_client` is not imported: the stdio
server's cold start never loads it. Each process counts for itself: with several replicas, each serves its own
and Prometheus adds them up.

No label carries a person's name, a title, a token or a webhook, and every label's values are bounded: tools and
statuses are ours, REST methods are the ones our code calls, portal error codes outside a known list count as
`PORTAL_ERROR`, refusal codes are our own. A person's user id is a label only with `B24_METRICS_USER_IDS=true`.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from b24_mcp.errors import B24Error, PortalError, is_known_portal_code

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

PREFIX = "b24mcp"
TOOL_STATUSES = frozenset({"preview", "deleted", "partial", "cancelled", "error", "ok"})
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Pooled(Protocol):
    """A connection pool whose use `/metrics` reports (`postgres.database.Database`)."""

    role: str

    def pool_stats(self) -> Mapping[str, int] | None:
        """psycopg_pool's `get_stats()`, or None while no pool is open."""
        ...


_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_on: _Metrics | None = None


def watch_pool(pooled: Pooled) -> None:
    """Report `pooled`'s connections while it lives (kept weakly; cheap whether metrics are on or not)."""
    _pools.add(pooled)


def enable(*, per_user: bool = False) -> CollectorRegistry:
    """Turn recording on with fresh counters (the HTTP server does, once); `per_user` adds `user_id` to tool calls.

    Imports `prometheus_client`; returns the registry `/metrics` exposes.
    """
    global _on
    _on = _Metrics(per_user=per_user)
    return _on.registry


def enabled() -> bool:
    """Whether the process records metrics."""
    return _on is not None


def disable() -> None:
    """Stop recording (tests)."""
    global _on
    _on = None


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The metrics in the format the scraper accepts (Prometheus text or OpenMetrics): the body and its type."""
    from prometheus_client.exposition import choose_encoder

    assert _on is not None, "metrics are not enabled"
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_on.registry), content_type


def tool_call(tool: str, status: str, user_id: int | None = None) -> None:
    """One finished tool call (`status`: the result's, `ok` for a listing)."""
    if _on is None:
        return
    labels = [tool, status if status in TOOL_STATUSES else "error"]
    if _on.per_user:
        labels.append(str(user_id) if user_id is not None else "")
    _on.tool_calls.labels(*labels).inc()


def refused(code: str) -> None:
    """One refusal of our own (`CONFIRMATION_REQUIRED`, `ITEM_CHANGED`, `JOURNAL_UNWRITABLE`, ...)."""
    if _on is not None:
        _on.refusals.labels(code).inc()


def deletions(*, deleted: int = 0, failed: int = 0, not_sent: int = 0) -> None:
    """Items of a confirmed deletion: deleted, failed (refused by the portal or not known), not sent."""
    if _on is None:
        return
    for outcome, count in (("deleted", deleted), ("failed", failed), ("not_sent", not_sent)):
        if count:
            _on.deletions.labels(outcome).inc(count)


def portal_result(error: B24Error | None) -> str:
    """The `result` label of a portal request: `ok`, our transport code, or the portal's code when it is a known one."""
    if error is None:
        return "ok"
    code = error.code.upper()
    if isinstance(error, PortalError) and not is_known_portal_code(code):
        return "PORTAL_ERROR"
    return code


@contextmanager
def portal_request(method: str) -> Iterator[None]:
    """Time one HTTP request to the portal (a `batch` is one) and count it by its result."""
    started = time.perf_counter()
    try:
        yield
    except B24Error as exc:
        _portal(method, portal_result(exc), started)
        raise
    _portal(method, "ok", started)


def _portal(method: str, result: str, started: float) -> None:
    if _on is not None:
        _on.portal_requests.labels(method, result).inc()
        _on.portal_seconds.labels(method).observe(time.perf_counter() - started)


def rate_limit_waited(seconds: float) -> None:
    """How long a request waited for room in the portal's rate bucket."""
    if _on is not None:
        _on.rate_wait.observe(seconds)


@contextmanager
def journal_write(store: str) -> Iterator[None]:
    """Time one write of the journal (`store`: `file` or `database`); count it as failed when it raises."""
    started = time.perf_counter()
    try:
        yield
    except Exception:
        if _on is not None:
            _on.journal_failures.labels(store).inc()
        raise
    finally:
        if _on is not None:
            _on.journal_seconds.labels(store).observe(time.perf_counter() - started)


class _Metrics:
    """The metric objects of one registry."""

    def __init__(self, *, per_user: bool) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.gc_collector import GCCollector
        from prometheus_client.platform_collector import PlatformCollector
        from prometheus_client.process_collector import ProcessCollector

        from b24_mcp import __version__

        self.per_user = per_user
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Gauge(f"{PREFIX}_build_info", "The b24-mcp version serving.", ["version"], registry=registry).labels(
            __version__
        ).set(1)
        self.tool_calls = Counter(
            f"{PREFIX}_tool_calls",
            "Finished tool calls by tool and result status.",
            ["tool", "status", *(["user_id"] if per_user else [])],
            registry=registry,
        )
        self.deletions = Counter(
            f"{PREFIX}_deletions",
            "Items of confirmed deletions by outcome: deleted, failed, not_sent.",
            ["outcome"],
            registry=registry,
        )
        self.refusals = Counter(
            f"{PREFIX}_refusals", "Refusals of our own, by code (nothing was deleted).", ["code"], registry=registry
        )
        self.portal_requests = Counter(
            f"{PREFIX}_portal_requests",
            "HTTP requests to the portal by REST method (a batch is one: batch) and result.",
            ["method", "result"],
            registry=registry,
        )
        self.portal_seconds = Histogram(
            f"{PREFIX}_portal_request_seconds",
            "Time of one HTTP request to the portal, by REST method.",
            ["method"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.rate_wait = Histogram(
            f"{PREFIX}_rate_limit_wait_seconds",
            "Time a portal request waited for room in the portal's rate bucket.",
            buckets=(0.0, *_SECONDS),
            registry=registry,
        )
        self.journal_seconds = Histogram(
            f"{PREFIX}_journal_write_seconds",
            "Time of one durable journal write (file: write and fsync; database: one transaction).",
            ["store"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.journal_failures = Counter(
            f"{PREFIX}_journal_write_failures",
            "Journal writes that failed (JOURNAL_UNWRITABLE).",
            ["store"],
            registry=registry,
        )
        registry.register(_PoolCollector())


class _PoolCollector:
    """The database pools' use, read when scraped."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        connections = GaugeMetricFamily(
            f"{PREFIX}_db_pool_connections", "Open connections of a database pool, by state.", labels=["pool", "state"]
        )
        most = GaugeMetricFamily(f"{PREFIX}_db_pool_max", "The most connections a pool opens.", labels=["pool"])
        waiting = GaugeMetricFamily(
            f"{PREFIX}_db_pool_requests_waiting", "Requests waiting for a connection now.", labels=["pool"]
        )
        waited = CounterMetricFamily(
            f"{PREFIX}_db_pool_wait_seconds", "Time requests waited for a connection.", labels=["pool"]
        )
        errors = CounterMetricFamily(
            f"{PREFIX}_db_pool_connection_errors", "Failed attempts to open a connection.", labels=["pool"]
        )
        totals: dict[str, dict[str, float]] = {}
        for pooled in list(_pools):
            stats = pooled.pool_stats() or {}
            sums = totals.setdefault(pooled.role, {})
            for key, value in stats.items():
                sums[key] = sums.get(key, 0) + value
        for role, stats in totals.items():
            size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
            connections.add_metric([role, "idle"], idle)
            connections.add_metric([role, "in_use"], max(size - idle, 0))
            most.add_metric([role], stats.get("pool_max", 0))
            waiting.add_metric([role], stats.get("requests_waiting", 0))
            waited.add_metric([role], stats.get("requests_wait_ms", 0) / 1000)
            errors.add_metric([role], stats.get("connections_errors", 0))
        yield from (connections, most, waiting, waited, errors)
