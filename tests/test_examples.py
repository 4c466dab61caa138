"""The worked examples in ``examples/``, run as their README says (the FastAPI app in process with its
own Redis and SQLite file; the Django project through its own ``manage.py test``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from examples.fastapi_app.app import create_app

from .redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def test_fastapi_app_reads_writes_evicts_after_commit_and_serves_metrics(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    app = create_app(f"sqlite+aiosqlite:///{tmp_path / 'example.sqlite'}", redis_server.url)
    with TestClient(app) as client:
        assert client.get("/users/1").status_code == 404  # a cached None
        created = client.post("/users", json={"name": "Ada"})
        assert created.status_code == 201
        user_id = created.json()["id"]
        for _ in range(50):  # a short load: one miss, then hits
            assert client.get(f"/users/{user_id}").json() == {"id": user_id, "name": "Ada"}
        assert client.put(f"/users/{user_id}", json={"name": "Grace"}).json()["name"] == "Grace"
        assert client.get(f"/users/{user_id}").json()["name"] == "Grace"
        assert client.get("/users/999").status_code == 404
        assert client.put("/users/999", json={"name": "x"}).status_code == 404
        scrape = client.get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    cache = "examples.fastapi_app.app.create_app.<locals>.get_user"
    assert f'cache_gets_total{{cache="{cache}",result="hit"}} 50.0' in text
    assert f'cache_evictions_total{{cache="{cache}",reason="key"}} 3.0' in text
    assert "cache_load_duration_seconds_bucket" in text


@pytest.mark.slow
def test_django_example_passes_its_own_tests() -> None:
    project = ROOT / "examples" / "django_app"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(project)])}
    done = subprocess.run([sys.executable, "manage.py", "test", "--noinput", "-v", "2"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stderr
