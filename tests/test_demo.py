"""The demo runs and shows hits, misses, evictions and a fresh read after a write."""

from __future__ import annotations

import subprocess
import sys


def test_demo_output() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cacheaside", "demo", "--ops", "120"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for word in ("hits:", "misses:", "evictions:", "time:", "read-after-write"):
        assert word in text
    assert "fresh, as expected" in text


def test_demo_on_redis_says_it_is_not_available_yet() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cacheaside", "demo", "--redis", "redis://127.0.0.1:1/0"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "not available yet" in out.stdout
