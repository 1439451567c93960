"""The README's plugin table names every plugin there is, in the row of its role."""

from __future__ import annotations

import re
from pathlib import Path

from pyulogd.core import registry
from pyulogd.core.plugin import Filter, Source

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_plugin_table_names_every_plugin_in_its_row() -> None:
    rows = dict(re.findall(r"^\| (input|filter|output) \| (.*) \|$", README.read_text(), re.M))
    assert set(rows) == {"input", "filter", "output"}
    for name in registry.names():
        cls = registry.get(name)
        role = "input" if issubclass(cls, Source) else "filter" if issubclass(cls, Filter) else "output"
        assert re.search(rf"\b{name}\b", rows[role]), f"README.md: {name} is missing from the {role} row"
