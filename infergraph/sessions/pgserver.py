"""A throwaway PostgreSQL server from the machine's binaries (tests and the demo).

The machine's ``initdb``/``pg_ctl`` (Debian's ``postgresql-15``) are used rather than
a pip wheel: they are the real server, CI installs them with one apt-get, and
the Docker image does not need them (production points the block at a real
database). ``initdb`` refuses to run as root, so as root the server runs as the
``postgres`` user. Trust authentication on a unix socket in a private temp dir
and on 127.0.0.1 only; fsync off: the data is thrown away.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries here; the message says how to get them."""


def find_bindir() -> Path:
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in [os.environ.get("INFERGRAPH_PG_BINDIR", ""), *installed]:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb): install them with "
        "`apt-get install postgresql-15`, or set INFERGRAPH_PG_BINDIR, or configure a database"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayPostgres:
    """``with ThrowawayPostgres() as pg: pg.conninfo`` — started on enter, deleted on exit."""

    def __init__(self, user: str = "infergraph", database: str = "infergraph") -> None:
        self.bindir = find_bindir()
        self.user, self.database = user, database
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="infergraph-pg-"))
        self.data = self.root / "data"
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no 'postgres' user for initdb to run as"
                ) from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]

    @property
    def conninfo(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._run_as, *args], capture_output=True, text=True, cwd=self.root, check=False
        )
        if done.returncode:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip() or done.stdout}")

    def start(self) -> ThrowawayPostgres:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            self.user,
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        self._pg_ctl_start()
        self._run(
            str(self.bindir / "createdb"),
            "-h",
            str(self.root),
            "-p",
            str(self.port),
            "-U",
            self.user,
            self.database,
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` simulates a crash) and keep the data dir."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        """Start the server on this data dir; durability is off (a throwaway test server)."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        try:
            return self.start()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until_up(conninfo: str, timeout: float = 10.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(conninfo, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
