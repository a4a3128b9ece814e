"""What the service counts about the driver's results: each report type of the driver and the
metrics it feeds, registered with `metrics.count_results`. The registration lives here, above the
driver, because `metrics` is used by the connection layers below it and imports nothing upward."""

from __future__ import annotations

from cloudstack_storpool import metrics
from cloudstack_storpool.driver.gc import GcReport
from cloudstack_storpool.driver.hosts import HostHeartbeat
from cloudstack_storpool.driver.recovery import SyncReport
from cloudstack_storpool.driver.stats import PoolStats

POOL_BYTE_KINDS = ("total", "used", "free", "provisioned", "stored")


def _gc(report: GcReport) -> None:
    metrics.GC_DELETED.inc(len(report.done))
    metrics.GC_ERRORS.inc(len(report.errors))


def _delay_delete(report: SyncReport) -> None:
    metrics.DELAY_DELETE_EXPIRED.inc(len(report.expired))


def _heartbeat(host: HostHeartbeat) -> None:
    metrics.heartbeat_verdict(host.host_id, host.verdict)


def _pool(pool: PoolStats) -> None:
    for kind in POOL_BYTE_KINDS:
        value = getattr(pool, kind)
        if value is not None:
            metrics.POOL_BYTES.labels(pool.uuid, kind).set(value)


def register() -> None:
    metrics.count_results(GcReport, _gc)
    metrics.count_results(SyncReport, _delay_delete)
    metrics.count_results(HostHeartbeat, _heartbeat)
    metrics.count_results(PoolStats, _pool)

