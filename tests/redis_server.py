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

    def __init__(self, *extra: str, port: int | None = None) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port() if port is None else port
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
        self.stop()  # leave no process behind
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


class RedisCluster:
    """A 3-primary Redis Cluster on free ports (``redis-cli --cluster create``), for cluster tests."""

    def __init__(self, primaries: int = 3) -> None:
        self.nodes: list[RedisServer] = []
        try:
            self._start(primaries)
        except BaseException:
            self.stop()  # leave no node behind
            raise

    def _start(self, primaries: int) -> None:
        import redis as redis_py

        for _ in range(primaries):
            self.nodes.append(RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                          "--cluster-node-timeout", "2000", port=_cluster_port()))
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = []
            for n in self.nodes:
                c = redis_py.Redis(port=n.port, socket_timeout=1)
                states.append(c.cluster("info").get("cluster_state"))
                c.close()
            if all(s == "ok" for s in states):
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not come up")

    @property
    def port(self) -> int:
        return self.nodes[0].port

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free and valid too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")
