"""Record a monitor session with a real ovsdb-server (Debian openvswitch-switch): what the
NEUTRON filter's OVSDB client sends and what the server answers, byte for byte, while ports
are added, changed and deleted with ovs-vsctl. Writes session.jsonl next to this file:
one ``{"dir": "send"|"recv"|"action", "data": ...}`` per line, in order.

    python3 tests/vectors/ovsdb/record.py

Needs ovsdb-server, ovsdb-tool, ovs-vsctl and /usr/share/openvswitch/vswitch.ovsschema; runs
in a temporary directory, no root.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
HERE = Path(__file__).resolve().parent
PORT = "1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d"
GW = "9f8e7d6c-5b4a-4c3d-8e2f-1a0b9c8d7e6f"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ovsrec") as d:
        sock = f"{d}/db.sock"
        subprocess.run(["ovsdb-tool", "create", f"{d}/db", SCHEMA], check=True)
        srv = subprocess.Popen(["ovsdb-server", f"{d}/db", f"--remote=punix:{sock}", f"--unixctl={d}/ctl",
                                "--no-chdir", f"--log-file={d}/log"])
        try:
            for _ in range(100):
                if Path(sock).exists():
                    break
                time.sleep(0.05)
            vsctl = ["ovs-vsctl", f"--db=unix:{sock}", "--no-wait"]
            subprocess.run([*vsctl, "init"], check=True)
            subprocess.run([*vsctl, "add-br", "br-int", "--", "add-port", "br-int", "qr-1a2b3c4d-5e", "--", "set",
                            "Interface", "qr-1a2b3c4d-5e", "type=internal", f"external_ids:iface-id={PORT}",
                            "external_ids:attached-mac=fa:16:3e:11:22:33", "external_ids:iface-status=active"],
                           check=True)
            out = []
            c = socket.socket(socket.AF_UNIX)
            c.connect(sock)
            req = json.dumps({"method": "monitor", "params": ["Open_vSwitch", "pyulogd-interfaces",
                              {"Interface": {"columns": ["name", "external_ids"]}}], "id": 1},
                             separators=(",", ":"))
            c.send(req.encode())
            out.append({"dir": "send", "data": req})

            def drain(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    r, _, _ = select.select([c], [], [], max(0.0, end - time.monotonic()))
                    if r:
                        b = c.recv(65536)
                        if not b:
                            return
                        out.append({"dir": "recv", "data": b.decode()})
                        text = b.decode()
                        if '"method":"echo"' in text:
                            msg = json.loads(text)
                            reply = json.dumps({"result": msg["params"], "error": None, "id": msg["id"]},
                                               separators=(",", ":"))
                            c.send(reply.encode())
                            out.append({"dir": "send", "data": reply})

            drain(0.5)
            for action in (
                ["add-port", "br-int", "qg-9f8e7d6c-5b", "--", "set", "Interface", "qg-9f8e7d6c-5b", "type=internal",
                 f"external_ids:iface-id={GW}", "external_ids:attached-mac=fa:16:3e:44:55:66"],
                ["set", "Interface", "qr-1a2b3c4d-5e", "external_ids:iface-status=inactive"],
                ["del-port", "br-int", "qr-1a2b3c4d-5e"],
            ):
                out.append({"dir": "action", "data": " ".join(action)})
                subprocess.run([*vsctl, *action], check=True)
                drain(0.5)
            drain(12.0)  # long enough for the server's inactivity probe (echo)
            c.close()
        finally:
            srv.terminate()
            srv.wait(10)
    (HERE / "session.jsonl").write_text("".join(json.dumps(o) + "\n" for o in out))


if __name__ == "__main__":
    main()
