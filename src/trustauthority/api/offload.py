"""Where a request's blocking work runs: on the event loop, or in the thread pool.

The use cases are synchronous (SQLAlchemy, cryptography). FastAPI runs a sync route, and each
sync dependency, in its thread pool: two hand-offs per request. Under the GIL a hand-off buys
no parallel CPU; what it buys is overlap with waiting for I/O. With a SQLite store the hot
paths wait for no network, and the hand-off costs more than most of the work it moves: the
worker and the event-loop thread trade the GIL at every sqlite3 call (each one releases it).
On the 2-core machine the benchmarks run on, each hand-off cost ~1.5 ms of server CPU, and a
whoami went from 6.6 to 3.2 ms without them (`bench/attestation.py` measures both).

So `run_blocking` runs the work inline when the server is one process on a SQLite store
(`create_app(blocking_inline=True)`, decided by `serve`), and in the thread pool otherwise:
with PostgreSQL every statement is a network round trip that other requests can use, and with
several processes on one SQLite file a writer may wait in SQLite's busy handler for another
process, which must not stall the loop. Authentication (`Requires`) and the hot, short routes
(attestation challenge and evidence, whoami, the JWKS) go through it. A key release goes
through `run_around_io`: its checks where `run_blocking` would run them, its key-server call
and its record always in the pool, in one hand-off (the checks too when nothing runs inline).
Other routes that call key servers, or may run long (exports, imports, backups), stay sync
routes: always in the pool, so they never stall the loop. One wait remains: SQLite has one
writer, so an inline write waits while a pool route's write transaction runs (an admin's host
delete or baseline import, a key release's record; tens of milliseconds at most). Nothing that
holds the writer lock waits for the loop, so it cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")


def inline_is_cheaper(dialect: str, processes: int) -> bool:
    """Whether `serve` should run blocking work inline (see the module docstring)."""
    return dialect == "sqlite" and processes == 1


async def run_blocking(request: Request, work: Callable[[], T]) -> T:
    """`work()`, inline or in the thread pool as the app was created to (module docstring)."""
    if request.app.state.blocking_inline:
        return work()
    return await run_in_threadpool(work)


async def run_around_io(request: Request, before: Callable[[], P], io: Callable[[P], R],
                        after: Callable[[P, R], T]) -> T:
    """`after(p, io(p))` with `p = before()`, where `io` is network I/O that may be slow (a key
    server): `io` and `after` always in the thread pool, in one hand-off, never on the loop;
    `before` inline when blocking work runs inline, else in that same hand-off.

    `after` goes with `io` so that what `io` did is always followed through: a request
    cancelled while it waits (a client gone, a shutdown) does not stop a thread, so a key that
    a key server unwrapped is always recorded.
    """
    if request.app.state.blocking_inline:
        prepared = before()
        return await run_in_threadpool(lambda: after(prepared, io(prepared)))

    def all_three() -> T:
        prepared = before()
        return after(prepared, io(prepared))

    return await run_in_threadpool(all_three)
