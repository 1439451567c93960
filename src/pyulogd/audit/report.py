"""placeholder: replaced below"""

from __future__ import annotations

from typing import Any


def write_report(path: str, summary: dict[str, Any], recent: list[dict[str, Any]], source: str, filters: Any,
                 now: float) -> None:
    raise NotImplementedError
