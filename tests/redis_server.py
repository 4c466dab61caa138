"""redis-server processes on free ports, for the tests and the benchmarks (never the server on 6379)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ["PROTOCOL", "REDIS_SERVER", "RedisCluster", "RedisServer", "free_port"]

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
        self.paused = False
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

    def restart_keeping_dir(self) -> None:
        """Start a killed node again with its directory (a cluster node rejoins with its nodes.conf)."""
        self.start()

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
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A Redis Cluster of ``primaries`` primaries with ``replicas`` replicas each, on free ports
    (``redis-cli --cluster create``, ``cluster-node-timeout`` 2 s), for cluster tests."""

    NODE_TIMEOUT_MS = 2000

    def __init__(self, primaries: int = 3, replicas: int = 0, *extra: str) -> None:
        self.nodes: list[RedisServer] = []
        self.extra = extra
        try:
            self._start(primaries, replicas)
        except BaseException:
            self.stop()  # leave no node behind
            raise

    def _start(self, primaries: int, replicas: int) -> None:
        for _ in range(primaries * (1 + replicas)):
            self.nodes.append(RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                          "--cluster-node-timeout", str(self.NODE_TIMEOUT_MS), *self.extra,
                                          port=_cluster_port()))
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", str(replicas),
                        "--cluster-yes"], check=True, capture_output=True, timeout=30)
        self.wait_ok(replicas_up=bool(replicas))

    def _info(self, node: RedisServer, section: str) -> dict[str, str]:
        import redis as redis_py

        c = redis_py.Redis(port=node.port, socket_timeout=1, decode_responses=True)
        try:
            text = c.execute_command("CLUSTER INFO") if section == "cluster" else c.execute_command("INFO", section)
        finally:
            c.close()
        if isinstance(text, dict):
            return {str(k): str(v) for k, v in text.items()}
        return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)

    def live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None and not n.paused]

    def wait_ok(self, replicas_up: bool = False, timeout: float = 30) -> None:
        """Until every live node says ``cluster_state:ok`` (and, with ``replicas_up``, every replica is in sync)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                nodes = self.live()
                ok = all(self._info(n, "cluster").get("cluster_state") == "ok" for n in nodes)
                if ok and replicas_up:
                    for n in nodes:
                        info = self._info(n, "replication")
                        if info.get("role") == "slave" and info.get("master_link_status") != "up":
                            ok = False
                if ok:
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError("the cluster did not come up")

    def primary_of(self, key: str) -> RedisServer:
        """The node that serves ``key``'s slot now."""
        import redis as redis_py

        for n in self.live():
            c = redis_py.Redis(port=n.port, socket_timeout=1)
            try:
                slot = c.cluster("keyslot", key)
                for start, end, primary, *_ in c.cluster("slots"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        return next(m for m in self.nodes if m.port == port)
            except Exception:
                continue
            finally:
                c.close()
        raise RuntimeError(f"no node serves {key!r}")

    def primaries(self) -> list[RedisServer]:
        return [n for n in self.live() if self._info(n, "replication").get("role") == "master"]

    @property
    def port(self) -> int:
        return self.live()[0].port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        for n in self.nodes:
            if n.paused:
                n.resume()
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


def main() -> None:
    """``make cluster``: a local Redis Cluster (3 primaries, 3 replicas) to try the store on, until Ctrl-C."""
    cluster = RedisCluster(3, 1, "--cluster-require-full-coverage", "no")
    try:
        print(f"Redis Cluster up: {cluster.url} (nodes {', '.join(str(n.port) for n in cluster.nodes)}); "
              "Ctrl-C stops it", flush=True)
        print(f"  try it: .venv/bin/cacheaside demo --redis {cluster.url} --cluster", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
