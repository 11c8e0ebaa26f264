"""Workers on separate hosts for real: a worker in its own network namespace reaches PostgreSQL
over its own veth link, and the link is cut mid-run. It must lose its leases and write nothing
more, even once the link is back, and its dialogues must finish on the other worker.

Network namespaces need root and ``ip`` (Debian's iproute2), which these machines and CI have;
where they cannot be made the test says so and skips: the separate-process tests in
``test_workers.py`` cover the same protocol without a network between the processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import raw_sql, statuses, stored_conversations
from tests.pg_server import PostgresServer
from tests.test_workers import (
    DIALOGUES,
    SPEC,
    Worker,
    check_consistent,
    check_lease_history,
    reference,  # noqa: F401 - the fixture, used by name
    wait_for,
)


@dataclass(frozen=True)
class Host:
    """A network namespace linked to this machine by a veth pair."""

    namespace: str
    host_link: str
    host_address: str
    address: str

    def run(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *command]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def other_host() -> Iterator[Host]:
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2's ip: covered by the separate-process tests")
    tag = f"cc{os.getpid() % 100000}"
    host = Host(tag, f"{tag}h", "10.231.7.1", "10.231.7.2")
    try:
        _ip("netns", "add", tag)
    except subprocess.CalledProcessError as exc:
        pytest.skip(
            f"cannot make a network namespace here ({exc.stderr.strip()}): covered by the separate-process tests"
        )
    try:
        _ip("link", "add", host.host_link, "type", "veth", "peer", "name", f"{tag}n")
        _ip("link", "set", f"{tag}n", "netns", tag)
        _ip("addr", "add", f"{host.host_address}/30", "dev", host.host_link)
        _ip("link", "set", host.host_link, "up")
        _ip("netns", "exec", tag, "ip", "addr", "add", f"{host.address}/30", "dev", f"{tag}n")
        _ip("netns", "exec", tag, "ip", "link", "set", f"{tag}n", "up")
        _ip("netns", "exec", tag, "ip", "link", "set", "lo", "up")
        yield host
    finally:
        subprocess.run(["ip", "netns", "delete", tag], capture_output=True)
        subprocess.run(["ip", "link", "delete", host.host_link], capture_output=True)


@pytest.fixture
def shared_server(tmp_path: Path, other_host: Host) -> Iterator[PostgresServer]:
    """A server listening on loopback and on the veth link, trusting the other host."""
    # Its own folder, not under pytest's root, which another session would make private (see conftest).
    server = PostgresServer(host="*", trusted_networks=(f"{other_host.address}/32",)).start()
    yield server
    server.remove()


def test_a_worker_whose_link_is_cut_loses_its_leases_and_writes_nothing_after(
    tmp_path: Path,
    other_host: Host,
    shared_server: PostgresServer,
    reference: Path,  # noqa: F811 - the fixture imported above
) -> None:
    spec = tmp_path / "fleet.toml"
    spec.write_text(SPEC)
    local = shared_server.create_database("fleet")
    remote = shared_server.url("fleet", host=other_host.host_address)
    far = Worker(spec, remote, launcher=other_host.run)

    def far_holds() -> list[str]:
        with raw_sql(local) as conn:
            rows = conn.execute(
                "SELECT l.dialogue_id FROM lease l JOIN worker w ON w.id = l.worker_id "
                "WHERE w.host = :host AND w.pid = :pid AND l.expires_at > (now() AT TIME ZONE 'utc') "
                "AND (SELECT count(*) FROM node n WHERE n.dialogue_id = l.dialogue_id AND n.kind = 'turn') >= 1",
                {"host": os.uname().nodename, "pid": far.child_pid()},
            ).all()
        return [str(r[0]) for r in rows]

    near: Worker | None = None
    try:
        wait_for(lambda: _tables(local) and bool(far_holds()), timeout=180, what="the far worker to run dialogues")
        held = far_holds()
        _ip("link", "set", other_host.host_link, "down")  # the cable is cut
        cut_at = time.monotonic()
        near = Worker(spec, local)
        assert near.wait(600) == 0, near.output
        print(f"the near worker finished {time.monotonic() - cut_at:.1f} s after the cut")
        with raw_sql(local) as conn:
            nodes_before = conn.execute("SELECT count(*) FROM node").scalar_one()
            epochs = dict(conn.execute("SELECT dialogue_id, epoch FROM lease").fetchall())
        assert all(epochs[d] >= 2 for d in held), "the far worker's dialogues were taken over"
        _ip("link", "set", other_host.host_link, "up")  # and mended: the far worker may talk again
        far.wait(300)
    finally:
        far.proc.kill()
        if near is not None and near.proc.poll() is None:
            near.proc.kill()
    with raw_sql(local) as conn:
        assert conn.execute("SELECT count(*) FROM node").scalar_one() == nodes_before, far.output
    assert statuses(local) == {"completed": DIALOGUES}
    check_consistent(local)
    check_lease_history(local)
    assert stored_conversations(local) == stored_conversations(reference)


def _tables(url: str) -> bool:
    from clonechat.location import db_location
    from clonechat.read.connect import schema_state_of

    state = schema_state_of(db_location(url))
    return state is not None and state[0] > 0
