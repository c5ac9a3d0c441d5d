"""`run_blocking` runs a request's work inline or in the thread pool, as `serve` decided."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any, cast

import pytest
from fastapi import Request

from trustauthority.api.offload import inline_is_cheaper, run_blocking


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


def test_inline_only_for_one_process_on_sqlite() -> None:
    assert inline_is_cheaper("sqlite", 1)
    # another process's writer can hold SQLite's lock: waiting for it must not stall the loop
    assert not inline_is_cheaper("sqlite", 2)
    # every PostgreSQL statement is a network round trip other requests can use
    assert not inline_is_cheaper("postgresql", 1)
