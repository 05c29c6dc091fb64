"""A private PostgreSQL server for the tests that need one: initdb'd in a temporary folder and started on a
free 127.0.0.1 port once per session (as the `postgres` user when the tests run as root, since PostgreSQL
refuses to run as root), and a fresh database per test. Registered for every test module by tests/conftest.py
(`pytest_plugins`); the fixtures skip, with the reason, only where no server can be started
(`apt-get install -y postgresql` and `pip install 'psycopg[binary]'` provide one)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, int]]:
    """(host, port) of a private PostgreSQL server with a trusted superuser `tunegate`."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'psycopg[binary]'")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed: no initdb under /usr/lib/postgresql/*/bin or on PATH "
            "(apt-get install -y postgresql)"
        )
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="tunegate-pg-"))  # not under pytest's 0700 folder: postgres must enter it
    if os.geteuid() == 0:
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    root.chmod(0o700)
    data, log, port = root / "data", root / "server.log", free_port()
    init = subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "tunegate",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-500:]}")
    start = subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=60",
            "start",
        ],
        capture_output=True,
        text=True,
    )
    if start.returncode != 0:
        tail = log.read_text()[-800:] if log.exists() else start.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {tail.strip()}")
    try:
        yield "127.0.0.1", port
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: tuple[str, int]) -> Iterator[str]:
    """A fresh, empty database on the server, dropped afterwards."""
    import psycopg

    host, port = pg_server
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=host, port=port, user="tunegate", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://tunegate@{host}:{port}/{name}"
    with psycopg.connect(host=host, port=port, user="tunegate", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
