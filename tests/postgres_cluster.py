"""A throwaway PostgreSQL cluster for tests and benchmarks, from the machine's own binaries.

`Cluster.create()` runs `initdb` into a temporary directory and `pg_ctl start`s the server on a free loopback port
(TCP on 127.0.0.1 only, password authentication with a random password; the Unix socket stays in the directory).
As root, the binaries run as the `postgres` user (`runuser -u postgres --`) and the directory is handed to it.
`stop()` and `start()` take the same cluster down and up again on the same port (a database outage);
`destroy()` stops it and removes the directory.

`find_binaries()` says where `initdb` and `pg_ctl` are, or why there are none: on PATH, else the highest version
under /usr/lib/postgresql/*/bin (Debian's layout).

The fixtures (a pytest plugin: `conftest.py` loads it): `postgres`, for the session, is that cluster, or the
database `B24_TEST_DATABASE_URL` names (which the tests may wipe: they drop its `b24mcp` schema); without either
the tests that use it skip and say why, except under `CI=true`, where a missing PostgreSQL fails them.
`database_url` gives each test that database with no b24-mcp schema in it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import free_port

# Read at import: the tests' settings fixture removes every B24_* variable from the environment.
GIVEN_URL = os.environ.get("B24_TEST_DATABASE_URL") or None
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


class Cluster:
    """A PostgreSQL server of our own in a temporary directory (see the module docstring)."""

    def __init__(self, binaries: Binaries, folder: Path, port: int, password: str, *, durable: bool = False) -> None:
        self.binaries = binaries
        self.durable = durable  # fsync on, as a real server; off for tests (faster, and nothing to keep)
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
    def create(cls, binaries: Binaries, *, durable: bool = False) -> Cluster:
        """initdb, start, and create the test user and database (`durable`: fsync on, for benchmarks)."""
        folder = Path(tempfile.mkdtemp(prefix="b24-pg-"))
        cluster = cls(binaries, folder, free_port(), secrets.token_hex(16), durable=durable)
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
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off"
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


@dataclass(frozen=True)
class Postgres:
    """The tests' database: its URL (a secret), and the cluster when the tests started it (else None)."""

    url: str
    cluster: Cluster | None

    def reset(self) -> None:
        """Drop everything b24-mcp keeps in the database."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as connection:
            connection.execute("DROP SCHEMA IF EXISTS b24mcp CASCADE")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is needed under CI=true and {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL to test against: {reason} (or set B24_TEST_DATABASE_URL)")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A running PostgreSQL for the whole session (see the module docstring)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("the driver is not installed (pip install -e '.[dev]' brings it)")
    if GIVEN_URL is not None:
        yield Postgres(GIVEN_URL, None)
        return
    binaries = find_binaries()
    if isinstance(binaries, str):
        _missing(f"there are {binaries}")
        return
    cluster = Cluster.create(binaries)
    try:
        yield Postgres(cluster.url, cluster)
    finally:
        cluster.destroy()


@pytest.fixture
def database_url(postgres: Postgres) -> str:
    """The URL of a database without a b24-mcp schema, running (restarted if a test stopped it)."""
    if postgres.cluster is not None and not postgres.cluster.running():
        postgres.cluster.start()
    postgres.reset()
    return postgres.url
