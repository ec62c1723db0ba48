"""Shared fixtures: each test gets its own Dashboard, registry and port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hyperdash_process import HyperdashProcess

from hyperdash_otel import Config, Dashboard


@pytest.fixture
def make_dashboard() -> Iterator:
    """Factory for dashboards that are closed (server stopped, registry detached) after."""
    made: list[Dashboard] = []

    def make(**kwargs: object) -> Dashboard:
        kwargs.setdefault("port", 0)
        kwargs.setdefault("collect_system_metrics", False)
        dash = Dashboard(Config(**kwargs))  # type: ignore[arg-type]
        made.append(dash)
        return dash

    yield make
    for dash in made:
        dash.close()


@pytest.fixture
def dash(make_dashboard) -> Dashboard:
    """A dashboard without psutil sampling, so its snapshot is a function of the calls."""
    return make_dashboard()


@pytest.fixture
def spawn() -> Iterator:
    """Factory for ``hyperdash`` subprocesses, killed and reaped after the test."""
    started: list[HyperdashProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> HyperdashProcess:
        process = HyperdashProcess(*args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests last: Playwright's sync API keeps an event loop running in the main
    thread while its browser is open, and ``asyncio.run`` in a later test would fail."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
