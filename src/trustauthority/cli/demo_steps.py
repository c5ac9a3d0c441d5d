"""The demo's building blocks: step headings, outcomes, and refusals that must happen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from trustauthority.cli.output import console


class DemoFailure(Exception):
    """A step did not have the outcome it must have."""


@contextmanager
def step(title: str) -> Iterator[None]:
    console.rule(f"[bold cyan]{title}")
    yield


def ok(message: str) -> None:
    console.print(f"  [green]✓[/] {message}", highlight=False)


def info(message: str) -> None:
    console.print(f"    [dim]{message}[/]", highlight=False)


def refused(message: str, error: Exception) -> None:
    kind = getattr(error, "error_type", type(error).__name__)
    console.print(f"  [red]✗[/] {message}\n    [dim]refused ({kind}):[/] {error}",
                  highlight=False)


def expect_refusal(message: str, error_type: type[Exception] | tuple[type[Exception], ...],
                   action: Callable[[], object]) -> Exception:
    """Run `action`, which must fail with `error_type`; show the refusal and return it."""
    try:
        action()
    except error_type as error:
        refused(message, error)
        return error
    raise DemoFailure(f"{message}: it was accepted")
