"""What PRINTPKT and PRINTFLOW share: render the resolved input keys into one ``print`` line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyulogd.core.plugin import OK, Filter, Key, KeyType

Printer = Callable[[list[Any]], str]


class PrinterFilter(Filter):
    """Subclasses declare ``input_keys`` and ``make_printer(slots by key name) -> Printer``."""

    output_keys = (Key("print", KeyType.STRING, help='the line, ending in " \\n"'),)
    _render: Printer | None = None

    @staticmethod
    def make_printer(slot: dict[str, int]) -> Printer:
        raise NotImplementedError

    def _prepare(self) -> Printer:
        names = [k.name for k in self.input_keys]
        render = self._render = self.make_printer(dict(zip(names, self.in_slots, strict=True)))
        return render

    def start(self) -> None:
        self._prepare()

    def interp(self, rec: list[Any]) -> int:
        render = self._render or self._prepare()  # usable before start(), as in the tests
        rec[self.out_base] = render(rec)
        return OK
