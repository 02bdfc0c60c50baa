"""A PostgreSQL server of the test's own, to stop and restart: never the shared one on 5432.

`PrivatePostgres(folder)` runs `initdb` into `folder` and `pg_ctl` on a free
loopback port (trust auth, user `postgres`, database `postgres`); `stop()`,
`start()` and `restart()` are what an outage test needs. The binaries come from
`$PATH` or `/usr/lib/postgresql/*/bin`. PostgreSQL refuses to run as root, so
under root the commands run as the `postgres` user, in a folder it owns.

Use the `private_postgres` fixture (one server per test module, left running
after each test); tests using it are marked `postgres` and `slow`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PrivatePostgres", "private_postgres"]


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit()
                        else 0)
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivatePostgres:
    """One throwaway PostgreSQL cluster in `folder`; see the module docstring."""

    def __init__(self, folder: Path, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            # The postgres user cannot enter root's pytest folders: a folder of its own.
            self.folder = Path(tempfile.mkdtemp(prefix="router-test-pg-"))
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        else:
            self.folder = folder
        self.data = self.folder / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr or result.stdout}")

    def start(self) -> None:
        if self.is_running():
            return
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"),
                  "-o", options, "-w", "-t", "30", "start")

    def stop(self) -> None:
        """A fast shutdown: open sessions are ended (`AdminShutdown`), as in a restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status"]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, check=False).returncode == 0

    def remove(self) -> None:
        if self.is_running():
            self.stop()
        if self._as_postgres:
            shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL for this module; each test leaves it running."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        reason = "needs the PostgreSQL server binaries (pg_ctl, initdb)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have them", pytrace=False)
        pytest.skip(reason)
    server = PrivatePostgres(tmp_path_factory.mktemp("private-postgres"), bin_dir)
    server.start()
    try:
        yield server
    finally:
        server.remove()
