"""A process that shares a Redis with the test: ``python -m tests.redis_worker URL PREFIX``.

It waits at a gate (a Redis list the test pushes to once every worker is ready),
calls ``compute(1)`` once and prints the value and its call site's stats as JSON.
``compute`` counts its runs in Redis, so the test counts them from outside.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

import redis

from cacheaside import RedisStore, cache_aside, configure

control: Any = None
PREFIX = ""


@cache_aside(ttl=60, key="shared:{x}")
def compute(x: int) -> dict[str, Any]:
    control.incr(f"{PREFIX}:calls")
    time.sleep(0.3)
    return {"x": x, "pid": os.getpid()}


def main(url: str, prefix: str) -> None:
    global control, PREFIX
    PREFIX = prefix
    control = redis.Redis.from_url(url)
    configure(store=RedisStore.from_url(url, prefix=prefix))
    control.incr(f"{prefix}:ready")
    if control.blpop([f"{prefix}:gate"], 10) is None:
        raise SystemExit("the gate never opened")
    value = compute(1)
    print(json.dumps({"value": value, "stats": dataclasses.asdict(compute.stats())}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
