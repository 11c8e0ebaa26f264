"""Who is working on an experiment: the live batch workers, their dialogues, and the totals of
the whole experiment (every worker's progress, not one process's own).

``clonechat workers`` lists them; a running batch shows the totals beside its own counts. A
worker is live while it has not stopped cleanly and its last heartbeat is within its lease
(a killed one stops being listed once its leases have expired and another worker may take
its dialogues). Times are compared with the database's clock, as the leases are.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, String, bindparam, text

from clonechat.read.connect import Readable, connection, stored_time


@dataclass(frozen=True)
class WorkerRow:
    id: str
    experiment: str
    host: str
    pid: int
    concurrency: int
    lease_seconds: float
    started_at: datetime
    heartbeat_at: datetime
    #: Seconds since the last heartbeat, by the database's clock.
    silent_s: float
    #: The dialogues it holds a lease on now.
    dialogues: tuple[str, ...]


def _now(conn: Connection) -> datetime:
    if conn.dialect.name == "sqlite":
        from clonechat.engine.records import utcnow

        return utcnow()
    return stored_time(conn.execute(text("SELECT clock_timestamp() AT TIME ZONE 'utc'")).scalar_one())


_WORKERS = """
SELECT w.id, e.name, w.host, w.pid, w.concurrency, w.lease_seconds, w.started_at, w.heartbeat_at
FROM worker w JOIN experiment e ON e.id = w.experiment_id
WHERE w.stopped_at IS NULL {only}
ORDER BY e.name, w.started_at, w.id
"""
_HELD = "SELECT dialogue_id, worker_id, expires_at FROM lease WHERE worker_id IN :ids ORDER BY dialogue_id"


def live_workers(db: Readable, experiment: str | None = None) -> list[WorkerRow]:
    """Workers that have not stopped and whose last heartbeat is within their lease."""
    with connection(db) as conn:
        now = _now(conn)
        only = "" if experiment is None else "AND e.name = :experiment"
        rows = conn.execute(text(_WORKERS.format(only=only)), {"experiment": experiment}).all()
        live = [r for r in rows if (now - stored_time(r[7])).total_seconds() <= float(r[5])]
        held: dict[str, list[str]] = {}
        if live:
            query = text(_HELD).bindparams(bindparam("ids", expanding=True, type_=String()))
            for dialogue_id, worker_id, expires_at in conn.execute(query, {"ids": [r[0] for r in live]}):
                if stored_time(expires_at) > now:
                    held.setdefault(str(worker_id), []).append(str(dialogue_id))
    return [
        WorkerRow(
            id=str(r[0]),
            experiment=str(r[1]),
            host=str(r[2]),
            pid=int(r[3]),
            concurrency=int(r[4]),
            lease_seconds=float(r[5]),
            started_at=stored_time(r[6]),
            heartbeat_at=stored_time(r[7]),
            silent_s=max(0.0, (now - stored_time(r[7])).total_seconds()),
            dialogues=tuple(held.get(str(r[0]), ())),
        )
        for r in live
    ]


@dataclass(frozen=True)
class ExperimentTotals:
    """The whole experiment, every worker included."""

    dialogues: int
    by_status: dict[str, int]
    #: Workers live now (this one included).
    workers: int

    def count(self, statuses: Collection[str]) -> int:
        return sum(n for status, n in self.by_status.items() if status in statuses)


_STATUS_COUNTS = """
SELECT d.status, count(*) FROM dialogue d JOIN condition c ON c.id = d.condition_id
WHERE c.experiment_id = :experiment GROUP BY d.status
"""


def experiment_totals(db: Readable, experiment_id: str) -> ExperimentTotals:
    """Dialogues by status (one grouped count) and the live workers of the experiment."""
    with connection(db) as conn:
        by_status = {str(s): int(n) for s, n in conn.execute(text(_STATUS_COUNTS), {"experiment": experiment_id})}
        name = conn.execute(text("SELECT name FROM experiment WHERE id = :e"), {"e": experiment_id}).scalar()
    workers = len(live_workers(db, str(name))) if name is not None else 0
    return ExperimentTotals(sum(by_status.values()), by_status, workers)
