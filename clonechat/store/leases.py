"""Who may write which dialogue: workers, leases with fencing tokens, and their history.

Many ``clonechat batch`` processes, on many hosts, share one experiment through the database
alone (no coordination server):

- **Claim.** A worker picks dialogues that are unfinished and unleased (or whose lease expired)
  with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent claimers never wait on each other
  and never pick the same row; the upsert of the ``lease`` row only succeeds while the old lease
  is expired, and bumps ``epoch``, the fencing token. SQLite serialises writers (``BEGIN
  IMMEDIATE``), which gives the same exclusivity on one machine.
- **Heartbeat.** Renewal extends the worker's leases that are still in force; one that expired
  is lost even if nobody took it yet (a paused process must not resume writing).
- **Fence.** :class:`Fence` is asked inside every write transaction of the worker's single
  writer: a turn (or a status change) of a leased dialogue is written only if the lease row
  still names this worker and epoch and has not expired, read ``FOR SHARE`` so a takeover waits
  for that commit. A worker that was paused past its lease (SIGSTOP, a long GC, a partition)
  therefore writes nothing more into a dialogue another worker took.

Times come from the database server's clock on PostgreSQL (``clock_timestamp()``), so hosts
with skewed clocks agree on when a lease expires; on SQLite (one machine) from this process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import BindParameter, Connection, String, bindparam, text

from clonechat.store.dialect import is_sqlite, sqlite_value

_SERVER_NOW = "(clock_timestamp() AT TIME ZONE 'utc')"


def _lists(*names: str) -> list[BindParameter[str]]:
    """``IN :name`` parameters taking a list of ids (typed, so an empty list works on PostgreSQL)."""
    return [bindparam(name, expanding=True, type_=String()) for name in names]


def _clock(conn: Connection, lease_seconds: float = 0.0) -> tuple[str, str, dict[str, object]]:
    """SQL for "now" and "now + lease", with their parameters, on this connection's dialect."""
    if is_sqlite(conn):
        now = datetime.now(UTC)
        return (
            ":now",
            ":expires",
            {
                "now": sqlite_value(now),
                "expires": sqlite_value(now + timedelta(seconds=lease_seconds)),
            },
        )
    return _SERVER_NOW, f"({_SERVER_NOW} + make_interval(secs => :lease))", {"lease": lease_seconds}


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    experiment_id: str
    host: str
    pid: int
    concurrency: int
    lease_seconds: float


def register_worker(conn: Connection, worker: WorkerInfo) -> None:
    now, _, params = _clock(conn)
    conn.execute(
        text(
            "INSERT INTO worker (id, experiment_id, host, pid, concurrency, lease_seconds, started_at, heartbeat_at) "
            f"VALUES (:id, :experiment_id, :host, :pid, :concurrency, :lease_seconds, {now}, {now})"
        ),
        {**params, **worker.__dict__},
    )


@dataclass(frozen=True)
class Grant:
    """A dialogue this worker now holds: its fencing token and the head it continues from."""

    dialogue_id: str
    epoch: int
    head_node_id: str | None


_CANDIDATES = """
SELECT d.id, d.head_node_id, l.expires_at FROM dialogue d
JOIN condition c ON c.id = d.condition_id
LEFT JOIN lease l ON l.dialogue_id = d.id
WHERE c.experiment_id = :experiment AND d.status IN :statuses AND d.id NOT IN :exclude
  AND (l.dialogue_id IS NULL OR l.expires_at <= {now})
ORDER BY d.replicate, c.id, d.id
LIMIT :limit
"""
_TAKE = """
INSERT INTO lease (dialogue_id, worker_id, epoch, expires_at, renewed_at)
VALUES (:dialogue, :worker, 1, {expires}, {now})
ON CONFLICT (dialogue_id) DO UPDATE SET
    worker_id = excluded.worker_id, epoch = lease.epoch + 1,
    expires_at = excluded.expires_at, renewed_at = excluded.renewed_at
WHERE lease.expires_at <= {now}
RETURNING epoch
"""
_GRANTED = """
INSERT INTO lease_grant (dialogue_id, epoch, worker_id, granted_at, replaced_expires_at, head_at_grant)
VALUES (:dialogue, :epoch, :worker, {now}, :replaced, :head)
"""


def claim(
    conn: Connection,
    worker_id: str,
    experiment_id: str,
    statuses: Collection[str],
    *,
    exclude: Collection[str],
    limit: int,
    lease_seconds: float,
) -> list[Grant]:
    """Take up to ``limit`` claimable dialogues of the experiment (see the module docstring)."""
    if limit <= 0:
        return []
    now, expires, params = _clock(conn, lease_seconds)
    candidates = _CANDIDATES.format(now=now) + ("" if is_sqlite(conn) else " FOR UPDATE OF d SKIP LOCKED")
    query = text(candidates).bindparams(*_lists("statuses", "exclude"))
    rows = conn.execute(
        query,
        {**params, "experiment": experiment_id, "statuses": list(statuses), "exclude": list(exclude), "limit": limit},
    ).all()
    grants: list[Grant] = []
    for dialogue_id, head, replaced in rows:
        epoch = conn.execute(
            text(_TAKE.format(now=now, expires=expires)), {**params, "dialogue": dialogue_id, "worker": worker_id}
        ).scalar()
        if epoch is None:  # another worker renewed or took it between the two statements
            continue
        conn.execute(
            text(_GRANTED.format(now=now)),
            {
                **params,
                "dialogue": dialogue_id,
                "epoch": epoch,
                "worker": worker_id,
                "head": head,
                "replaced": replaced,
            },
        )
        grants.append(Grant(str(dialogue_id), int(epoch), head))
    return grants


def renew(conn: Connection, worker_id: str, held: Mapping[str, int], lease_seconds: float) -> set[str]:
    """The heartbeat: extend this worker's leases that are still in force (same epoch, not
    expired); return the dialogues it still holds. Also stamps the worker's row."""
    now, expires, params = _clock(conn, lease_seconds)
    conn.execute(text(f"UPDATE worker SET heartbeat_at = {now} WHERE id = :worker"), {**params, "worker": worker_id})
    if not held:
        return set()
    query = text(
        f"UPDATE lease SET expires_at = {expires}, renewed_at = {now} "
        f"WHERE worker_id = :worker AND dialogue_id IN :ids AND expires_at > {now} RETURNING dialogue_id, epoch"
    ).bindparams(*_lists("ids"))
    rows = conn.execute(query, {**params, "worker": worker_id, "ids": list(held)}).all()
    return {str(d) for d, epoch in rows if held.get(str(d)) == epoch}


def holding(conn: Connection, worker_id: str, held: Mapping[str, int]) -> set[str]:
    """Of ``held`` (dialogue -> epoch), the dialogues this worker still holds, read so that a
    takeover waits for the caller's commit (PostgreSQL: ``FOR SHARE``)."""
    if not held:
        return set()
    now, _, params = _clock(conn)
    lock = "" if is_sqlite(conn) else " FOR SHARE"
    query = text(
        f"SELECT dialogue_id, epoch FROM lease WHERE worker_id = :worker AND dialogue_id IN :ids "
        f"AND expires_at > {now}{lock}"
    ).bindparams(*_lists("ids"))
    rows = conn.execute(query, {**params, "worker": worker_id, "ids": list(held)}).all()
    return {str(d) for d, epoch in rows if held.get(str(d)) == epoch}


def release(conn: Connection, worker_id: str, dialogue_id: str, epoch: int, reason: str) -> None:
    """Give a dialogue back (it ended, or the worker is stopping): the lease expires now, so any
    worker may claim it if it is still unfinished, and the grant records its end."""
    now, _, params = _clock(conn)
    values = {**params, "worker": worker_id, "dialogue": dialogue_id, "epoch": epoch, "reason": reason}
    released = conn.execute(
        text(
            f"UPDATE lease SET expires_at = {now} "
            "WHERE dialogue_id = :dialogue AND worker_id = :worker AND epoch = :epoch"
        ),
        values,
    ).rowcount
    if released:
        conn.execute(
            text(
                f'UPDATE lease_grant SET released_at = {now}, "release" = :reason '
                "WHERE dialogue_id = :dialogue AND epoch = :epoch AND worker_id = :worker"
            ),
            values,
        )


def workers_on_host(conn: Connection, experiment_id: str, host: str) -> list[tuple[str, int]]:
    """(worker id, pid) of the experiment's workers on ``host`` that never stopped cleanly."""
    rows = conn.execute(
        text("SELECT id, pid FROM worker WHERE experiment_id = :e AND host = :h AND stopped_at IS NULL"),
        {"e": experiment_id, "h": host},
    ).all()
    return [(str(w), int(pid)) for w, pid in rows]


def expire_dead_worker(conn: Connection, worker_id: str) -> int:
    """A worker known to be dead (its process is gone) loses its leases now instead of at their
    expiry: a batch killed and restarted on the same host continues at once. Its row is stamped
    stopped. Returns how many leases it held."""
    now, _, params = _clock(conn)
    expired = conn.execute(
        text(f"UPDATE lease SET expires_at = {now} WHERE worker_id = :worker AND expires_at > {now}"),
        {**params, "worker": worker_id},
    ).rowcount
    conn.execute(text(f"UPDATE worker SET stopped_at = {now} WHERE id = :worker"), {**params, "worker": worker_id})
    return int(expired or 0)


def stop_worker(conn: Connection, worker_id: str) -> None:
    """The worker finished cleanly: stamp it (``clonechat workers`` stops listing it)."""
    now, _, params = _clock(conn)
    conn.execute(text(f"UPDATE worker SET stopped_at = {now} WHERE id = :worker"), {**params, "worker": worker_id})


def leased_elsewhere(
    conn: Connection, worker_id: str, experiment_id: str, statuses: Collection[str], exclude: Collection[str]
) -> int:
    """Unfinished dialogues of the experiment that another worker holds now: a worker with
    nothing to claim waits while there are any (their holder may die and leave them to it)."""
    now, _, params = _clock(conn)
    query = text(
        "SELECT count(*) FROM dialogue d JOIN condition c ON c.id = d.condition_id "
        "JOIN lease l ON l.dialogue_id = d.id "
        f"WHERE c.experiment_id = :experiment AND d.status IN :statuses AND d.id NOT IN :exclude "
        f"AND l.expires_at > {now} AND l.worker_id != :worker"
    ).bindparams(*_lists("statuses", "exclude"))
    values = {**params, "experiment": experiment_id, "statuses": list(statuses), "exclude": list(exclude)}
    return int(conn.execute(query, {**values, "worker": worker_id}).scalar_one())


@dataclass
class Fence:
    """The leases one worker's writer must check before writing a dialogue (see the module
    docstring). ``held`` is shared between the event loop (grants, releases) and the writer's
    thread (checks), under a lock; dialogues found lost are handed to ``on_lost`` on the event
    loop, after the transaction (:meth:`deliver`)."""

    worker_id: str
    on_lost: Callable[[str], None]
    held: dict[str, int] = field(default_factory=dict)
    _lost: set[str] = field(default_factory=set)
    _told: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def grant(self, dialogue_id: str, epoch: int) -> None:
        with self._lock:
            self.held[dialogue_id] = epoch

    def forget(self, dialogue_id: str) -> int | None:
        """Stop checking ``dialogue_id`` (it is being released); its epoch, if it was held."""
        with self._lock:
            return self.held.pop(dialogue_id, None)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.held)

    def check(self, conn: Connection, dialogue_ids: Collection[str]) -> set[str]:
        """Of ``dialogue_ids`` (touched by one transaction), those it must not write: leased
        to this worker once but no longer held. Dialogues it never leased are not its business."""
        with self._lock:
            mine = {d: self.held[d] for d in dialogue_ids if d in self.held}
            lost_before = {d for d in dialogue_ids if d in self._lost}
        still = holding(conn, self.worker_id, mine)
        lost = set(mine) - still
        if lost:
            self.mark_lost(lost)
        return lost | lost_before

    def mark_lost(self, dialogue_ids: Collection[str]) -> None:
        with self._lock:
            for d in dialogue_ids:
                self.held.pop(d, None)
                self._lost.add(d)

    def is_lost(self, dialogue_id: str) -> bool:
        with self._lock:
            return dialogue_id in self._lost

    def deliver(self) -> None:
        """Tell ``on_lost`` about each dialogue found lost since the last call (event loop only)."""
        with self._lock:
            news = sorted(self._lost - self._told)
            self._told.update(news)
        for dialogue_id in news:
            self.on_lost(dialogue_id)
