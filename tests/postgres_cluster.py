"""A throwaway PostgreSQL cluster for tests and benchmarks, from the machine's own binaries.

`Cluster.create()` runs `initdb` into a temporary directory and `pg_ctl start`s the server on a free loopback port
(TCP on 127.0.0.1 only, password authentication with a random password; the Unix socket stays in the directory).
As root, the binaries run as the `postgres` user (`runuser -u postgres --`) and the directory is handed to it.
`stop()` and `start()` take the same cluster down and up again on the same port (a database outage);
`destroy()` stops it and removes the directory.

`find_binaries()` says where `initdb` and `pg_ctl` are, or why there are none: on PATH, else the highest version
under /usr/lib/postgresql/*/bin (Debian's layout).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DATABASE = "b24mcp_test"
USER = "b24mcp"
_START_SECONDS = 60


@dataclass(frozen=True)
class Binaries:
    """Where the PostgreSQL server programs are."""

    initdb: Path
    pg_ctl: Path


def find_binaries() -> Binaries | str:
    """The binaries, or a sentence saying why none were found."""
    on_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if on_path[0] and on_path[1]:
        return Binaries(Path(on_path[0]), Path(on_path[1]))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if versions:
        folder = versions[-1].parent
        return Binaries(folder / "initdb", folder / "pg_ctl")
    return "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A PostgreSQL server of our own in a temporary directory (see the module docstring)."""

    def __init__(self, binaries: Binaries, folder: Path, port: int, password: str) -> None:
        self.binaries = binaries
        self.folder = folder
        self.port = port
        self.password = password
        self.data = folder / "data"
        self.log = folder / "server.log"

    @property
    def url(self) -> str:
        """The test database's URL, with its password: a secret, like any database URL."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    @classmethod
    def create(cls, binaries: Binaries) -> Cluster:
        """initdb, start, and create the test user and database."""
        folder = Path(tempfile.mkdtemp(prefix="b24-pg-"))
        cluster = cls(binaries, folder, free_port(), secrets.token_hex(16))
        try:
            cluster._init()
            cluster.start()
            cluster._create_database()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def _as_server_user(self, *command: str | Path, timeout: float = _START_SECONDS) -> str:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*prefix, *map(str, command)],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.folder,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{Path(str(command[0])).name} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def _init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        password_file = self.folder / "password"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(password_file, "postgres", "postgres")
        password_file.chmod(0o600)
        try:
            self._as_server_user(
                self.binaries.initdb,
                "-D",
                self.data,
                "-U",
                USER,
                "--pwfile",
                password_file,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
        finally:
            password_file.unlink()

    def start(self) -> None:
        """Start the server (again) on its port; returns once it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off -c max_connections=200"
        self._as_server_user(self.binaries.pg_ctl, "-D", self.data, "-l", self.log, "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop the server at once (open connections are cut)."""
        self._as_server_user(self.binaries.pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*prefix, str(self.binaries.pg_ctl), "-D", str(self.data), "status"],
            capture_output=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            cwd=self.folder,
        )
        return done.returncode == 0

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + _START_SECONDS
        admin = f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/postgres"
        while True:
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"CREATE DATABASE {DATABASE}")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def destroy(self) -> None:
        """Stop the server if it runs, and remove its directory."""
        try:
            if self.data.exists() and self.running():
                self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
