"""`run_blocking` runs a request's work inline with SQLite and in the thread pool otherwise."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any, cast

import pytest
from fastapi import Request

from trustauthority.api.offload import run_blocking


def _request(dialect: str) -> Request:
    platform = SimpleNamespace(db=SimpleNamespace(dialect=dialect))
    return cast(Request, SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(
        platform=platform))))


async def _thread_of_work(dialect: str) -> tuple[int, int]:
    loop_thread = threading.get_ident()
    work_thread = await run_blocking(_request(dialect), threading.get_ident)
    return loop_thread, work_thread


def test_with_sqlite_the_work_runs_on_the_event_loop_thread() -> None:
    loop_thread, work_thread = asyncio.run(_thread_of_work("sqlite"))
    assert work_thread == loop_thread


def test_with_postgresql_the_work_runs_in_the_thread_pool() -> None:
    loop_thread, work_thread = asyncio.run(_thread_of_work("postgresql"))
    assert work_thread != loop_thread


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_error_in_the_work_reaches_the_caller_unchanged(dialect: str) -> None:
    class Refused(Exception):
        pass

    def work() -> Any:
        raise Refused("no")

    with pytest.raises(Refused, match="no"):
        asyncio.run(run_blocking(_request(dialect), work))
