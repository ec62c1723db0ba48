"""The README is the user's manual: hold it to the code."""

import re
from pathlib import Path

import hyperdash_otel
from hyperdash_otel.config import Config
from hyperdash_otel.telemetry import metric_table_markdown

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_metric_table_is_generated_from_the_code_table():
    start, end = "<!-- metric-table:start -->\n", "\n<!-- metric-table:end -->"
    documented = README[README.index(start) + len(start): README.index(end)]
    assert documented == metric_table_markdown()


def test_every_config_field_is_documented():
    for field in Config.__dataclass_fields__:
        assert f"`{field}`" in README, field


def test_public_surface_is_exactly_all():
    exported = {n for n in dir(hyperdash_otel) if not n.startswith("_")} - {
        "config", "dashboard", "snapshot", "stores", "telemetry", "validation", "system",
        "server", "cli", "demo", "watch", "otel", "source", "fleet"}
    assert exported | {"__version__"} == set(hyperdash_otel.__all__)


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    assert "make demo" in first_block.group(1) and "make test" in first_block.group(1)


def test_every_public_name_is_in_the_readme():
    for name in hyperdash_otel.__all__:
        if name != "__version__":
            assert re.search(rf"`{name}\b", README), name
