"""`run_blocking` runs a request's work inline or in the thread pool, as `serve` decided."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import SimpleNamespace
from typing import Any, cast

import pytest
from fastapi import Request

from trustauthority.api.offload import inline_is_cheaper, run_around_io, run_blocking


def _request(inline: bool) -> Request:
    return cast(Request, SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(
        blocking_inline=inline))))


async def _threads(inline: bool) -> tuple[int, int]:
    loop_thread = threading.get_ident()
    work_thread = await run_blocking(_request(inline), threading.get_ident)
    return loop_thread, work_thread


def test_inline_work_runs_on_the_event_loop_thread() -> None:
    loop_thread, work_thread = asyncio.run(_threads(inline=True))
    assert work_thread == loop_thread


def test_otherwise_the_work_runs_in_the_thread_pool() -> None:
    loop_thread, work_thread = asyncio.run(_threads(inline=False))
    assert work_thread != loop_thread


@pytest.mark.parametrize("inline", [True, False])
def test_an_error_in_the_work_reaches_the_caller_unchanged(inline: bool) -> None:
    class Refused(Exception):
        pass

    def work() -> Any:
        raise Refused("no")

    with pytest.raises(Refused, match="no"):
        asyncio.run(run_blocking(_request(inline), work))


async def _threads_around_io(inline: bool) -> tuple[int, list[int]]:
    """The loop's thread, and the threads `before`, `io` and `after` ran on."""
    seen: list[int] = []

    def step(*_args: object) -> int:
        seen.append(threading.get_ident())
        return len(seen)

    assert await run_around_io(_request(inline), step, step, step) == 3  # after(p, io(p))
    return threading.get_ident(), seen


def test_around_io_inline_runs_only_the_checks_on_the_loop() -> None:
    loop_thread, (before, io, after) = asyncio.run(_threads_around_io(inline=True))
    assert before == loop_thread
    assert io == after != loop_thread


@pytest.mark.parametrize("inline", [True, False])
def test_what_the_io_did_is_recorded_even_when_the_request_is_cancelled(inline: bool) -> None:
    """A client that goes away, or a shutdown, while a key server unwraps: the record still
    follows, since `after` runs in the same thread as `io`."""
    io_started, io_may_end = threading.Event(), threading.Event()
    recorded: list[int] = []

    def io(prepared: int) -> int:
        io_started.set()
        io_may_end.wait(10)
        return prepared + 1

    def after(_prepared: int, done: int) -> int:
        recorded.append(done)
        return done

    async def cancelled_during_the_io() -> None:
        task = asyncio.create_task(run_around_io(_request(inline), lambda: 1, io, after))
        await asyncio.to_thread(io_started.wait, 10)
        task.cancel()
        io_may_end.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(cancelled_during_the_io())
    assert recorded == [2]


def test_around_io_otherwise_runs_all_three_in_one_hand_off() -> None:
    loop_thread, (before, io, after) = asyncio.run(_threads_around_io(inline=False))
    assert before == io == after != loop_thread


@pytest.mark.parametrize("inline", [True, False])
def test_an_error_in_the_io_reaches_the_caller_and_skips_the_rest(inline: bool) -> None:
    class Unreachable(Exception):
        pass

    after_ran: list[bool] = []

    def io(_prepared: int) -> int:
        raise Unreachable("key server down")

    def after(_prepared: int, _done: int) -> int:
        after_ran.append(True)
        return 0

    with pytest.raises(Unreachable, match="key server down"):
        asyncio.run(run_around_io(_request(inline), lambda: 1, io, after))
    assert not after_ran


def test_inline_only_for_one_process_on_sqlite() -> None:
    assert inline_is_cheaper("sqlite", 1)
    # another process's writer can hold SQLite's lock: waiting for it must not stall the loop
    assert not inline_is_cheaper("sqlite", 2)
    # every PostgreSQL statement is a network round trip other requests can use
    assert not inline_is_cheaper("postgresql", 1)
