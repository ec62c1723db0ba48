"""Fixtures for tests/engines: one browser per engine per module, served dashboards, pages.

How each engine is driven, and what "console error" means in each, is in engine_pages.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from engine_pages import STARTERS, TICK, EnginePage

from hyperdash_otel import Config, Dashboard


@pytest.fixture(
    scope="module",
    params=[pytest.param("firefox", marks=pytest.mark.firefox),
            pytest.param("webkit", marks=pytest.mark.webkit)],
)
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One browser of the engine for every check in the module."""
    started = STARTERS[request.param]()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def start_dashboard() -> Iterator[Callable[..., Dashboard]]:
    """Factory: a served Dashboard (TICK seconds per tick, no psutil sampling); closed after.

    ``start_dashboard(port=p)`` serves on a given port, e.g. to restart where another was.
    """
    made: list[Dashboard] = []

    def start(**kwargs: Any) -> Dashboard:
        kwargs.setdefault("port", 0)
        kwargs.setdefault("update_interval", TICK)
        kwargs.setdefault("collect_system_metrics", False)
        dash = Dashboard(Config(**kwargs))
        made.append(dash)
        dash.start_in_thread()
        return dash

    yield start
    for dash in reversed(made):
        dash.close()


@pytest.fixture
def make_page(engine: Any) -> Callable[[int | None], EnginePage]:
    """Factory: the engine's page for a dashboard on `port`."""

    def make(port: int | None) -> EnginePage:
        assert port is not None
        return EnginePage(engine, port)

    return make
