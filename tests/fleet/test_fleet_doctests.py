"""The fleet modules' docstring examples are true."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from hyperdash_otel.fleet import config, http, prometheus, source


@pytest.mark.parametrize("module", [config, http, prometheus, source], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
