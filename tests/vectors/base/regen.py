"""Rebuild golden-pkt-json.jsonl and NN.hex from ../shared/golden (ulogd2 2.0.8's pkt-json case).

Each line: the inputs BASE saw (oob.family, oob.protocol, raw.pktlen, the payload file) and
``json``, the fields of ulogd's JSON line that BASE produced (plus src_ip/dest_ip from IP2STR,
which show the addresses). Run from the repository root: ``python tests/vectors/base/regen.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from base_helpers import JSON_NAMES, golden_from_shared  # noqa: E402


def main() -> None:
    keep = JSON_NAMES | {"src_ip", "dest_ip", "oob.family", "raw.pktlen", "oob.prefix"}
    lines = []
    for n, p in enumerate(golden_from_shared(), 1):
        name = f"{n:02d}.hex"
        hx = p["payload"].hex()
        (HERE / name).write_text("\n".join(hx[i : i + 64] for i in range(0, len(hx), 64)) + "\n")
        fields = {k: v for k, v in p["json"].items() if k in keep}
        v = {"n": n, "hex": name, "family": p["family"], "protocol": p["protocol"], "json": fields}
        lines.append(json.dumps(v))
    (HERE / "golden-pkt-json.jsonl").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
