"""A FastAPI app on SQLAlchemy (asyncio) and Redis: cached reads, writes that invalidate, evictions
after commit, and a Prometheus ``/metrics`` endpoint.

Run it (a Redis on localhost:6379; ``pip install 'cacheaside[examples]'``):

    DATABASE_URL=sqlite+aiosqlite:///example.sqlite REDIS_URL=redis://localhost:6379/0 \\
        uvicorn --factory examples.fastapi_app.app:main

    curl -X POST localhost:8000/users -H 'content-type: application/json' -d '{"name": "Ada"}'
    curl localhost:8000/users/1                 # a miss, then hits
    curl -X PUT localhost:8000/users/1 -H 'content-type: application/json' -d '{"name": "Grace"}'
    curl localhost:8000/metrics                 # cache_gets_total{cache="...get_user",result="hit"} ...
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cacheaside import RedisStore, cache_aside, invalidates
from cacheaside.integrations.sqlalchemy import evict_after_commit
from cacheaside.metrics import register_prometheus


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class NewName(BaseModel):
    name: str


def create_app(database_url: str, redis_url: str) -> FastAPI:
    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    store = RedisStore.from_url(redis_url, asyncio=True, prefix="example")
    registry = CollectorRegistry()

    @cache_aside(ttl=300, store=store, key="user:{user_id}")
    async def get_user(user_id: int) -> dict[str, Any] | None:
        async with sessions() as session:
            user = await session.get(User, user_id)
            return None if user is None else {"id": user.id, "name": user.name}

    @invalidates(get_user)
    async def rename_user(session: AsyncSession, user_id: int, name: str) -> bool:
        user = await session.get(User, user_id)
        if user is None:
            return False
        user.name = name  # written at the commit; get_user(user_id) is evicted now and after it
        return True

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        after_commit = evict_after_commit()
        collector = register_prometheus(registry)
        yield
        registry.unregister(collector)
        after_commit.remove()
        await store.aclose()
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/users", status_code=201)
    async def create_user(body: NewName) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            user = User(name=body.name)
            session.add(user)
            await session.flush()
            user_id = user.id
            # A read of this id before it existed cached None (a cached None is a hit): evict it, now
            # and (the integration) after the commit. The id is the database's, so no @invalidates here.
            await get_user.invalidate(user_id)
        return {"id": user_id, "name": body.name}

    @app.get("/users/{user_id}")
    async def read_user(user_id: int) -> dict[str, Any]:
        user = await get_user(user_id)
        if user is None:
            raise HTTPException(404, "no such user")
        return user

    @app.put("/users/{user_id}")
    async def update_user(user_id: int, body: NewName) -> dict[str, Any]:
        async with sessions() as session, session.begin():  # commits at the end of the block
            if not await rename_user(session, user_id, body.name):
                raise HTTPException(404, "no such user")
        return await read_user(user_id)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.state.get_user = get_user
    return app


def main() -> FastAPI:
    """The app for ``uvicorn --factory examples.fastapi_app.app:main``, configured from the environment."""
    return create_app(os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///example.sqlite"),
                      os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
