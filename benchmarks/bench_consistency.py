"""Consistency under concurrency: stale reads and throughput, cacheaside vs a plain cache-aside on redis-py.

Run: make bench-consistency  (or .venv/bin/python benchmarks/bench_consistency.py [--seconds 5])

N processes (default 4) share one Redis (started here on a free port) and a
SQLite file (the source of truth) of 20 rows holding (value, version). Each
process runs a loop for a fixed time: 90% reads, 10% writes, rows chosen with
a Zipf skew. A read selects the row, then takes 0-5 ms (serialization, network:
asleep by default; --cpu-share F spends that share of it on the CPU instead);
a write bumps the row's version and evicts its cache entry. Every operation is
logged with ``time.monotonic_ns()`` (one clock for all processes on Linux), and
the checker counts stale reads: reads that started after a write to the same
row had completed, and returned an older version.

Variants, each run in the same session on fresh keys:
  plain        get / compute / set with redis-py, DEL after a write (what most code and peers do)
  cacheaside   @cache_aside + @invalidates on a RedisStore (leases, single-flight)
each in sync and asyncio form. Target: 0 stale reads for cacheaside, and its
throughput at least 0.9x the plain one's in the same run.

--read-share F changes the 90% of reads (1 gives a workload of hits only, once the
first reads have filled the cache), and --breakdown also measures each variant's
client CPU and wall time per kind of operation: hits, reads that computed, reads served by
another process's computation (waited), writes.

--ablation adds a third variant and counts round trips (a counter around redis-py's sync
Connection.send_packed_command and asyncio's StreamWriter.writelines, each of which sends one
command or a whole pipeline, in every variant alike):
  nolease      @cache_aside + @invalidates on a RedisStore whose lease protocol is
               replaced by plain commands (GET hits as usual, SET after a miss, DEL
               evictions): what the library costs without leases. It serves stale
               reads like the plain variant; it exists only here, as a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from typing import Any

import msgpack
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncClientRetry
from redis.backoff import NoBackoff
from redis.retry import Retry as ClientRetry

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cacheaside import RedisStore, cache_aside, invalidates
from cacheaside._types import Entry, Lease
from cacheaside.stores.envelope import encode
from tests.redis_server import RedisCluster, RedisServer

ROWS = 20
READ_SHARE = 0.9
VARIANTS = ["plain-sync", "cacheaside-sync", "plain-async", "cacheaside-async"]
ABLATION = ["nolease-sync", "nolease-async"]
#: --peers: the peers' own decorators on the same workload, each evicting its key after a write as its
#: documentation says (the bench extra installs them).
PEERS = ["dogpile-sync", "cashews-async", "aiocache-async"]
#: Both variants' clients: the timeouts RedisStore.from_url uses, and no redis-py retries.
CLIENT: dict[str, Any] = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}

#: --cluster: every client is a Redis Cluster client, on a cluster the benchmark starts (workers get the flag too).
CLUSTER = "--cluster" in sys.argv
SyncClient: Any = redis.RedisCluster if CLUSTER else redis.Redis
AsyncClient: Any = redis.asyncio.RedisCluster if CLUSTER else redis.asyncio.Redis


# -- the source of truth ----------------------------------------------------------------


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    return db


def create(path: str) -> None:
    db = connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, value TEXT, version INTEGER)")
    db.execute("DELETE FROM rows")
    db.executemany("INSERT INTO rows VALUES (?, ?, 0)", [(i, f"row{i}") for i in range(ROWS)])
    db.close()


def select(db: sqlite3.Connection, row: int) -> list[Any]:
    value, version = db.execute("SELECT value, version FROM rows WHERE id = ?", (row,)).fetchone()
    return [value, version]


def bump(db: sqlite3.Connection, row: int) -> int:
    db.execute("BEGIN IMMEDIATE")
    (version,) = db.execute("UPDATE rows SET version = version + 1 WHERE id = ? RETURNING version", (row,)).fetchone()
    db.execute("COMMIT")
    return int(version)


# -- one worker process -----------------------------------------------------------------


class NoLeaseStore(RedisStore):
    """--ablation only: a RedisStore without its lease protocol (no stale-set protection, no
    cross-process single-flight). Misses compute and SET, evictions DEL the keys."""

    def acquire(self, key: str, tags: Any = (), refresh: bool = False, take_over: bool = False) -> Lease:
        return Lease(None, True)

    def set(self, key: str, entry: Entry, lease: Lease) -> bool:
        return bool(self.client.set(key, encode(key, entry, self.serializer), px=max(1, int(entry.retain * 1000))))

    def release(self, key: str, lease: Lease) -> None:
        pass

    def delete(self, keys: Any, tags: Any = ()) -> None:
        self.client.delete(*keys)

    async def aacquire(self, key: str, tags: Any = (), refresh: bool = False, take_over: bool = False) -> Lease:
        return Lease(None, True)

    async def aset(self, key: str, entry: Entry, lease: Lease) -> bool:
        payload = encode(key, entry, self.serializer)
        return bool(await self.client.set(key, payload, px=max(1, int(entry.retain * 1000))))

    async def arelease(self, key: str, lease: Lease) -> None:
        pass

    async def adelete(self, keys: Any, tags: Any = ()) -> None:
        await self.client.delete(*keys)


def count_round_trips(is_async: bool) -> list[int]:
    """Count this process's round trips: each send of packed commands (one command, or a pipeline).

    Counted below the client, where every path writes: a sync connection's ``send_packed_command``,
    and on asyncio the stream writer's ``writelines`` (redis-py's ``send_packed_command`` calls it).
    Reset it when the timed part starts.
    """
    sent = [0]
    cls: Any = asyncio.StreamWriter if is_async else redis.connection.AbstractConnection
    name = "writelines" if is_async else "send_packed_command"
    send = getattr(cls, name)

    def counted(self: Any, *args: Any, **options: Any) -> Any:
        sent[0] += 1
        return send(self, *args, **options)

    setattr(cls, name, counted)
    return sent


#: The share of a computation's 0-5 ms spent on the CPU (serialization); the rest waits (network).
CPU_SHARE = 0.0


class Breakdown:
    """--breakdown: a worker's client CPU per kind of operation.

    Kinds: ``hit``, ``computed`` (a read that ran the function), ``waited`` (a miss
    served by another process's computation) and ``write``. The counters are read
    outside the timed part, so only the operation itself is charged.
    """

    def __init__(self, computed: list[int], cached: Any) -> None:
        self.computed = computed
        self.cached = cached
        self.kinds: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])

    def before(self) -> None:
        self.hits = self.cached.stats().hits if self.cached is not None else 0
        self.runs = self.computed[0]
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def after(self, is_read: bool) -> None:
        cpu = time.process_time() - self.cpu
        wall = time.perf_counter() - self.wall
        if not is_read:
            kind = "write"
        elif self.computed[0] > self.runs:
            kind = "computed"
        elif self.cached is None or self.cached.stats().hits > self.hits:
            kind = "hit"
        else:
            kind = "waited"
        self.kinds[kind][0] += 1
        self.kinds[kind][1] += cpu
        self.kinds[kind][2] += wall


def run_queue_wait() -> float:
    """Seconds this process has spent ready to run but waiting for a CPU (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _spin(seconds: float) -> None:
    """Use ``seconds`` of this thread's CPU time, however busy the machine is."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def work(rng: random.Random) -> float:
    """A computation's 0-5 ms: spends CPU_SHARE of it on the CPU; returns the rest, to sleep."""
    seconds = rng.random() * 0.005
    if CPU_SHARE:
        _spin(seconds * CPU_SHARE)
    return seconds * (1 - CPU_SHARE)


def plan(seed: int) -> random.Random:
    return random.Random(seed)


WEIGHTS = [1 / (rank + 1) ** 1.1 for rank in range(ROWS)]


def pick(rng: random.Random) -> tuple[bool, int]:
    """(a read?, which row): reads with probability READ_SHARE, rows Zipf-skewed."""
    return rng.random() < READ_SHARE, rng.choices(range(ROWS), weights=WEIGHTS)[0]


def sync_worker(
    variant: str, url: str, prefix: str, dbpath: str, seconds: float, seed: int, count: bool = False,
    breakdown: bool = False,
) -> dict[str, Any]:
    db = connect(dbpath)
    rng = plan(seed)
    control = SyncClient.from_url(url)
    client = SyncClient.from_url(url, **CLIENT, retry=ClientRetry(NoBackoff(), 0))
    sent = count_round_trips(is_async=False) if count else None
    log: list[tuple[str, int, int, int, int]] = []
    computed = [0]  # runs of the computation, in every variant

    if variant == "plain-sync":

        def read(row: int) -> list[Any]:
            key = f"{prefix}:row:{row}"
            raw = client.get(key)
            if raw is not None:
                return msgpack.unpackb(raw)  # type: ignore[no-any-return]
            computed[0] += 1
            value = select(db, row)
            time.sleep(work(rng))
            client.set(key, msgpack.packb(value), ex=60)
            return value

        def write(row: int) -> int:
            version = bump(db, row)
            client.delete(f"{prefix}:row:{row}")
            return version

        stats = None
    elif variant == "dogpile-sync":
        from dogpile.cache import make_region

        kwargs = client.connection_pool.connection_kwargs
        region = make_region().configure("dogpile.cache.redis", expiration_time=60, arguments={
            "host": kwargs["host"], "port": kwargs["port"], "socket_timeout": CLIENT["socket_timeout"]})

        @region.cache_on_arguments(namespace=prefix)
        def read(row: int) -> list[Any]:
            computed[0] += 1
            value = select(db, row)
            time.sleep(work(rng))
            return value

        def write(row: int) -> int:
            version = bump(db, row)
            read.invalidate(row)  # type: ignore[attr-defined]
            return version

        stats = None
    else:
        store = (NoLeaseStore if variant.startswith("nolease") else RedisStore)(client, prefix=prefix)

        @cache_aside(ttl=60, store=store, key="row:{row}")
        def read(row: int) -> list[Any]:
            computed[0] += 1
            value = select(db, row)
            time.sleep(work(rng))
            return value

        @invalidates(read)
        def write(row: int) -> int:
            return bump(db, row)

        stats = read

    kinds = Breakdown(computed, stats) if breakdown else None
    control.incr(f"{prefix}:ready")
    control.blpop([f"{prefix}:gate"], 30)
    if sent is not None:
        sent[0] = 0  # the timed part's round trips only
    end = time.monotonic() + seconds
    cpu0 = time.process_time()
    waited0 = run_queue_wait()
    surfaced = 0
    while time.monotonic() < end:
        is_read, row = pick(rng)
        start = time.monotonic_ns()
        if kinds is not None:
            kinds.before()
        try:
            version = read(row)[1] if is_read else write(row)
        except Exception:  # an error that reached the caller
            surfaced += 1
            continue
        if kinds is not None:
            kinds.after(is_read)
        log.append(("r" if is_read else "w", row, start, time.monotonic_ns(), version))
    result = _result(log, surfaced, time.process_time() - cpu0, run_queue_wait() - waited0, computed[0], stats, sent,
                     kinds)
    return result


def _result(
    log: list[Any], surfaced: int, cpu: float, runq: float, computed: int, cached: Any, sent: list[int] | None,
    kinds: Breakdown | None,
) -> dict[str, Any]:
    """A worker's report: its log, the errors that reached it, its CPU (and, with --breakdown,
    per kind of operation), how often it ran the computation, the cache's counters, and
    (when counted) the commands it sent."""
    stats = {"computed": computed}
    if cached is not None:
        s = cached.stats()
        stats.update(hits=s.hits, misses=s.misses, errors=s.errors)
    if sent is not None:
        stats["commands"] = sent[0]
    return {"log": log, "stats": stats, "cpu": cpu, "runq": runq, "surfaced": surfaced,
            "kinds": dict(kinds.kinds) if kinds is not None else {}}


async def async_worker(
    variant: str, url: str, prefix: str, dbpath: str, seconds: float, seed: int, count: bool = False,
    breakdown: bool = False,
) -> dict[str, Any]:
    db = connect(dbpath)
    rng = plan(seed)
    control = AsyncClient.from_url(url)
    client = AsyncClient.from_url(url, **CLIENT, retry=AsyncClientRetry(NoBackoff(), 0))
    sent = count_round_trips(is_async=True) if count else None
    log: list[tuple[str, int, int, int, int]] = []
    computed = [0]  # runs of the computation, in every variant

    if variant == "plain-async":

        async def read(row: int) -> list[Any]:
            key = f"{prefix}:row:{row}"
            raw = await client.get(key)
            if raw is not None:
                return msgpack.unpackb(raw)  # type: ignore[no-any-return]
            computed[0] += 1
            value = select(db, row)
            await asyncio.sleep(work(rng))
            await client.set(key, msgpack.packb(value), ex=60)
            return value

        async def write(row: int) -> int:
            version = bump(db, row)
            await client.delete(f"{prefix}:row:{row}")
            return version

        stats = None
    elif variant == "cashews-async":
        from cashews import Cache

        cashews = Cache()
        cashews.setup(url, socket_timeout=CLIENT["socket_timeout"])

        @cashews(ttl=60, key=f"{prefix}:row:{{row}}")
        async def read(row: int) -> list[Any]:
            computed[0] += 1
            value = select(db, row)
            await asyncio.sleep(work(rng))
            return value

        async def write(row: int) -> int:
            version = bump(db, row)
            await cashews.delete(f"{prefix}:row:{row}")
            return version

        stats = None
    elif variant == "aiocache-async":
        from aiocache import Cache, cached

        port = int(url.rsplit(":", 1)[1].split("/")[0])
        aiocache = Cache(Cache.REDIS, endpoint="127.0.0.1", port=port, namespace=prefix,
                         timeout=CLIENT["socket_timeout"])

        @cached(ttl=60, cache=Cache.REDIS, endpoint="127.0.0.1", port=port, namespace=prefix,
                key_builder=lambda f, row: f"row:{row}")
        async def read(row: int) -> list[Any]:
            computed[0] += 1
            value = select(db, row)
            await asyncio.sleep(work(rng))
            return value

        async def write(row: int) -> int:
            version = bump(db, row)
            await aiocache.delete(f"row:{row}")
            return version

        stats = None
    else:
        store = (NoLeaseStore if variant.startswith("nolease") else RedisStore)(client, prefix=prefix)

        @cache_aside(ttl=60, store=store, key="row:{row}")
        async def read(row: int) -> list[Any]:
            computed[0] += 1
            value = select(db, row)
            await asyncio.sleep(work(rng))
            return value

        @invalidates(read)
        async def write(row: int) -> int:
            return bump(db, row)

        stats = read

    kinds = Breakdown(computed, stats) if breakdown else None
    await control.incr(f"{prefix}:ready")
    await control.blpop([f"{prefix}:gate"], 30)
    if sent is not None:
        sent[0] = 0  # the timed part's round trips only
    end = time.monotonic() + seconds
    cpu0 = time.process_time()
    waited0 = run_queue_wait()
    surfaced = 0
    while time.monotonic() < end:
        is_read, row = pick(rng)
        start = time.monotonic_ns()
        if kinds is not None:
            kinds.before()
        try:
            version = (await read(row))[1] if is_read else await write(row)
        except Exception:  # an error that reached the caller
            surfaced += 1
            continue
        if kinds is not None:
            kinds.after(is_read)
        log.append(("r" if is_read else "w", row, start, time.monotonic_ns(), version))
    result = _result(log, surfaced, time.process_time() - cpu0, run_queue_wait() - waited0, computed[0], stats, sent,
                     kinds)
    await client.aclose()
    await control.aclose()
    return result


def worker_main(args: argparse.Namespace) -> None:
    global CPU_SHARE, READ_SHARE
    CPU_SHARE = args.cpu_share
    READ_SHARE = args.read_share
    call = (args.variant, args.url, args.prefix, args.db, args.seconds, args.seed, args.count, args.breakdown)
    result = asyncio.run(async_worker(*call)) if args.variant.endswith("async") else sync_worker(*call)
    with open(args.out, "w") as f:
        json.dump(result, f)


# -- the checker ------------------------------------------------------------------------


def stale_reads(
    ops: list[tuple[str, int, int, int, int]], outages: list[tuple[int, int]] = ()  # type: ignore[assignment]
) -> tuple[int, int, int]:
    """(stale reads, of which late, reads). A read is stale if a write to its row completed before
    it started and it returned an older version than that write made; late if it also started
    more than 1 s after Redis came back from every outage before it (or with no outage at all)."""
    writes: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for kind, row, _start, end, version in ops:
        if kind == "w":
            writes[row].append((end, version))
    stale = late = reads = 0
    for kind, row, start, _end, version in ops:
        if kind != "r":
            continue
        reads += 1
        newest = max((v for end, v in writes[row] if end < start), default=0)
        if version < newest:
            stale += 1
            if not any(down <= start <= up + 1_000_000_000 for down, up in outages):
                late += 1
    return stale, late, reads


def chaos(server: RedisServer, seconds: float, outages: list[tuple[int, int]]) -> None:
    """Kill Redis (SIGKILL) at 30% and 65% of the run, and restart it 1 s later with its data."""
    started = time.monotonic()
    for at in (0.3, 0.65):
        time.sleep(max(0.0, started + seconds * at - time.monotonic()))
        down = time.monotonic_ns()
        server.kill()
        time.sleep(1.0)
        server.start()
        outages.append((down, time.monotonic_ns()))


def redis_cpu(control: Any) -> float:
    """The Redis server's CPU seconds so far (user + system, its own count; on a cluster, its primaries')."""
    if CLUSTER:
        infos = list(control.info("cpu", target_nodes=redis.RedisCluster.PRIMARIES).values())
    else:
        infos = [control.info("cpu")]
    return sum(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) for info in infos)


def run_variant(
    variant: str, url: str, procs: int, seconds: float, tmp: str, server: RedisServer | None = None,
    flags: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """One run of ``variant``: ``procs`` worker processes (given ``flags``) for ``seconds``, checked."""
    dbpath = os.path.join(tmp, "truth.sqlite")
    create(dbpath)
    prefix = f"cons-{variant}-{os.getpid()}-{time.monotonic_ns()}"
    control = SyncClient.from_url(url)
    outs = [os.path.join(tmp, f"{variant}-{i}.json") for i in range(procs)]
    workers = [
        subprocess.Popen([
            sys.executable, __file__, "--worker", "--variant", variant, "--url", url, "--prefix", prefix,
            "--db", dbpath, "--seconds", str(seconds), "--seed", str(1000 + i), "--out", outs[i],
            *flags, *(["--cluster"] if CLUSTER else []),
        ])
        for i in range(procs)
    ]
    deadline = time.monotonic() + 30
    while int(control.get(f"{prefix}:ready") or 0) < procs:
        if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
            raise SystemExit(f"{variant}: workers failed to start")
        time.sleep(0.01)
    server_cpu = redis_cpu(control)
    control.rpush(f"{prefix}:gate", *["go"] * procs)
    outages: list[tuple[int, int]] = []
    monkey = None
    if server is not None:
        monkey = threading.Thread(target=chaos, args=(server, seconds, outages))
        monkey.start()
    for w in workers:
        if w.wait(seconds + 60) != 0:
            raise SystemExit(f"{variant}: a worker failed")
    if monkey is not None:
        monkey.join()
    server_cpu = redis_cpu(control) - server_cpu if server is None else 0.0  # a restart resets the counter
    ops: list[tuple[str, int, int, int, int]] = []
    totals: dict[str, int] = defaultdict(int)
    cpu = 0.0
    runq = 0.0
    surfaced = 0
    results = []
    for out in outs:
        with open(out) as f:
            result = json.load(f)
        cpu += result["cpu"]
        runq += result["runq"]
        surfaced += result["surfaced"]
        ops.extend(tuple(op) for op in result["log"])
        for name, n in result.get("stats", {}).items():
            totals[name] += n
        results.append(result)
    control.close()
    stale, late, reads = stale_reads(ops, outages)
    lat = {k: [(e - s) / 1e6 for kind, _r, s, e, _v in ops if kind == k] for k in ("r", "w")}
    return {"ops": len(ops), "reads": reads, "stale": stale, "late": late, "throughput": len(ops) / seconds,
            "stats": dict(totals), "lat": lat, "cpu": cpu, "runq": runq, "surfaced": surfaced,
            "server_cpu": server_cpu, "kinds": pool_kinds(results)}


def pool_kinds(reports: list[dict[str, Any]]) -> dict[str, list[float]]:
    """--breakdown: the (operations, CPU seconds, wall seconds) per kind of operation of several reports, summed."""
    kinds: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for report in reports:
        for kind, (n, cpu, wall) in report["kinds"].items():
            kinds[kind][0] += n
            kinds[kind][1] += cpu
            kinds[kind][2] += wall
    return dict(kinds)


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's runs (one per round) pooled: counts summed, throughput and latency over all."""
    total: dict[str, Any] = {name: sum(r[name] for r in runs) for name in ("ops", "reads", "stale", "late", "surfaced")}
    total["throughput"] = statistics.mean(r["throughput"] for r in runs)
    total["rounds"] = [r["throughput"] for r in runs]
    stats: dict[str, int] = defaultdict(int)
    for r in runs:
        for name, n in r["stats"].items():
            stats[name] += n
    total["stats"] = dict(stats)
    total["cpu_per_op"] = sum(r["cpu"] for r in runs) / max(1, total["ops"])
    total["runq_per_op"] = sum(r["runq"] for r in runs) / max(1, total["ops"])
    total["server_cpu_per_op"] = sum(r["server_cpu"] for r in runs) / max(1, total["ops"])
    total["kinds"] = pool_kinds(runs)
    lat = {k: sorted(x for r in runs for x in r["lat"][k]) for k in ("r", "w")}
    total["latency"] = {k: (statistics.mean(v), v[len(v) // 2], v[int(len(v) * 0.99)]) for k, v in lat.items() if v}
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the variants, in alternating order; ratios are the median over rounds")
    parser.add_argument("--url", help="an existing Redis (default: start one on a free port)")
    parser.add_argument("--cluster", action="store_true",
                        help="run on a Redis Cluster it starts (3 primaries, 3 replicas), or that --url names")
    parser.add_argument("--chaos", action="store_true",
                        help="kill Redis twice per run and restart it with its data (cacheaside variants only)")
    parser.add_argument("--ablation", action="store_true",
                        help="also run cacheaside without its lease protocol, and count commands per operation")
    parser.add_argument("--cpu-share", type=float, default=0.0, metavar="F",
                        help="spend this share (0-1) of each computation's 0-5 ms on the CPU instead of asleep")
    parser.add_argument("--read-share", type=float, default=READ_SHARE, metavar="F",
                        help=f"the share (0-1) of operations that are reads (default {READ_SHARE:g})")
    parser.add_argument("--breakdown", action="store_true",
                        help="also measure client CPU per kind of operation (hit, computed, waited, write)")
    parser.add_argument("--peers", action="store_true",
                        help="also run dogpile.cache (sync), cashews and aiocache (async) on the same workload")
    parser.add_argument("--json", metavar="PATH", help="also write the headline figures to PATH (bench_all.py)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--variant", "--prefix", "--db", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("cpu_share", "read_share"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 1, got {getattr(args, name)}")
    if args.worker:
        worker_main(args)
        return

    if args.chaos:
        # appendfsync always: an eviction the server acknowledged must survive its own crash.
        server: RedisServer | None = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    else:
        server = None if args.url or args.cluster else RedisServer()
    cluster = RedisCluster(3, 1) if args.cluster and not args.url else None
    url = args.url if args.url and not args.chaos else (cluster or server).url  # type: ignore[union-attr]
    # Variants compared with each other run back to back in each round, in alternating order
    # (ABBA), so that the machine's drift over the session hits them alike.
    if args.chaos:
        groups = [[v] for v in VARIANTS if v.startswith("cacheaside")]
    elif args.ablation:
        groups = [[*VARIANTS[:2], ABLATION[0]], [*VARIANTS[2:], ABLATION[1]]]
    elif args.peers:
        if CLUSTER:
            parser.error("--peers runs on one server (the peers' Redis backends here are not cluster clients)")
        groups = [[*VARIANTS[:2], PEERS[0]], [*VARIANTS[2:], *PEERS[1:]]]
    else:
        groups = [VARIANTS[:2], VARIANTS[2:]]
    rounds = 1 if args.chaos else args.rounds
    flags = ["--cpu-share", repr(args.cpu_share), "--read-share", repr(args.read_share),
             *(["--count"] if args.ablation else []), *(["--breakdown"] if args.breakdown else [])]
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        with tempfile.TemporaryDirectory(prefix="cacheaside-consistency-") as tmp:
            for i in range(rounds):
                for group in groups:
                    for variant in group if i % 2 == 0 else group[::-1]:
                        runs[variant].append(run_variant(
                            variant, url, args.procs, args.seconds, tmp, server if args.chaos else None, flags,
                        ))
    finally:
        if server is not None:
            server.stop()
        if cluster is not None:
            cluster.stop()
    results = {variant: merge(runs[variant]) for group in groups for variant in group}
    if args.chaos:
        print(f"{args.procs} processes x {args.seconds:g} s per variant; Redis killed (SIGKILL) at 30% and 65% "
              "of each run and restarted 1 s later with its data (appendonly, appendfsync always)")
        print(f"{'variant':18} {'ops':>7} {'errors surfaced':>16} {'stale':>6} {'stale >1 s after back':>22}  stats")
        for variant, r in results.items():
            print(f"{variant:18} {r['ops']:7d} {r['surfaced']:16d} {r['stale']:6d} {r['late']:22d}  {r['stats']}")
        return
    print(f"{args.procs} processes x {args.seconds:g} s per variant and round, {rounds} rounds, {ROWS} rows, "
          f"{args.read_share:.0%} reads, Zipf(1.1) rows, 0-5 ms per computation "
          f"({args.cpu_share:.0%} of it on the CPU)")
    print(f"{'variant':18} {'ops':>7} {'ops/s':>8} {'reads':>7} {'stale':>6} {'stale/10k':>9} cache stats, all rounds")
    for variant, r in results.items():
        per10k = r["stale"] / max(1, r["reads"]) * 10_000
        print(f"{variant:18} {r['ops']:7d} {r['throughput']:8.0f} {r['reads']:7d} {r['stale']:6d} {per10k:9.1f}  "
              f"{r['stats'] or ''}")
    print("client CPU per operation: " + ", ".join(f"{v} {r['cpu_per_op'] * 1e6:.0f} us" for v, r in results.items()))
    print("Redis server CPU per operation: " + ", ".join(
        f"{v} {r['server_cpu_per_op'] * 1e6:.0f} us" for v, r in results.items()))
    if any(r["runq_per_op"] for r in results.values()):
        print("time a client was ready to run but waited for a core, per operation (Linux schedstat): " + ", ".join(
            f"{v} {r['runq_per_op'] * 1e6:.0f} us" for v, r in results.items()))
    if args.breakdown:
        print("by kind of operation (share of operations, client CPU us / wall ms per operation of that kind):")
        for variant, r in results.items():
            print(f"  {variant:18} " + "  ".join(
                f"{kind} {n / max(1, r['ops']):.1%} {cpu / max(1, n) * 1e6:.0f}/{wall / max(1, n) * 1e3:.2f}"
                for kind in ("hit", "computed", "waited", "write")
                for n, cpu, wall in [r["kinds"].get(kind, (0, 0.0, 0.0))] if n
            ))
    print("latency ms (mean / p50 / p99):")
    for variant, r in results.items():
        print(f"  {variant:18} " + "  ".join(
            f"{'read' if k == 'r' else 'write'} {m:.2f} / {p50:.2f} / {p99:.2f}"
            for k, (m, p50, p99) in r["latency"].items()
        ))
    if args.ablation:
        print("commands (round trips) per operation: " + ", ".join(
            f"{v} {r['stats']['commands'] / max(1, r['ops']):.2f}" for v, r in results.items()
        ))
    for mode in ("sync", "async"):
        print(f"throughput cacheaside/plain ({mode}): {ratio_text(results, 'cacheaside', mode)}  (target >= 0.9x)")
        if args.ablation:
            print(f"  ablation: cacheaside without leases/plain ({mode}): {ratio_text(results, 'nolease', mode)}")
    if args.json:
        headline = {v: {"stale": r["stale"], "reads": r["reads"], "ops": r["ops"], "throughput": r["throughput"],
                        "ratio": median_ratio(results, v), "surfaced": r["surfaced"]} for v, r in results.items()}
        with open(args.json, "w") as f:
            json.dump({"procs": args.procs, "seconds": args.seconds, "rounds": rounds, "variants": headline}, f)


def median_ratio(results: dict[str, Any], variant: str) -> float:
    """The median over rounds of ``variant``'s throughput over plain's, in its mode (sync or async)."""
    plain = results[f"plain-{variant.rsplit('-', 1)[1]}"]["rounds"]
    return statistics.median(a / b for a, b in zip(results[variant]["rounds"], plain, strict=True))


def ratio_text(results: dict[str, Any], variant: str, mode: str) -> str:
    """The median of the per-round throughput ratios of ``variant`` to plain, and each round's."""
    ratios = [a / b for a, b in zip(results[f"{variant}-{mode}"]["rounds"], results[f"plain-{mode}"]["rounds"],
                                    strict=True)]
    each = ", ".join(f"{r:.2f}" for r in ratios)
    return f"{statistics.median(ratios):.2f}x (median of {len(ratios)} rounds: {each})"


if __name__ == "__main__":
    main()
