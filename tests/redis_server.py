"""redis-server processes on free ports, for the tests and the benchmarks (never the server on 6379)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ["PROTOCOL", "REDIS_SERVER", "RedisServer", "free_port"]

REDIS_SERVER = shutil.which("redis-server")

#: ``CACHEASIDE_TEST_PROTOCOL=3`` runs every client the suite makes from a server's URL on RESP3.
PROTOCOL = os.environ.get("CACHEASIDE_TEST_PROTOCOL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server on a free port, in its own directory; never the one on 6379."""

    def __init__(self, *extra: str) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="cacheaside-redis-")
        self.args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", self.dir, *extra]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        query = f"?protocol={PROTOCOL}" if PROTOCOL else ""
        return f"redis://127.0.0.1:{self.port}/0{query}"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL, keeping the directory (and an append-only file, if enabled) for a restart."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        """Start again on the same port (empty, unless appendonly kept the data)."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server hangs, connections stay open."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
