"""A stand-in for ovsdb-server in unit tests: a unix socket in the test's directory that the
test drives by hand (accept, read the client's request, send what a real server sends)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from pyulogd.codec import ovsdb


class FakeServer:
    """A unix socket in the test's directory that plays the recorded server side."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.conn: socket.socket | None = None

    def accept(self) -> socket.socket:
        self.listener.settimeout(5)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(5)
        return self.conn

    def read_request(self) -> bytes:
        assert self.conn is not None
        data = b""
        f = ovsdb.Framer()
        while True:
            chunk = self.conn.recv(65536)
            assert chunk, "client closed"
            data += chunk
            if f.feed(chunk):
                return data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()

    def serve_monitor(self, rows: dict[str, dict[str, Any]]) -> socket.socket:
        """Accept the client, read its monitor request and answer it with ``rows`` (Interface
        name -> external_ids), as ovsdb-server would."""
        conn = self.accept()
        req = json.loads(self.read_request())
        conn.sendall(json.dumps({"id": req["id"], "error": None, "result": {"Interface": {
            f"00000000-0000-4000-8000-{n:012d}": {"new": {"name": name, "external_ids": ["map", sorted(ext.items())]}}
            for n, (name, ext) in enumerate(rows.items())}}}).encode())  # fmt: skip
        return conn

    def update(self, uuid_n: int, name: str, ext: dict[str, str] | None) -> None:
        """An update notification: row number ``uuid_n`` now has ``ext`` (None: deleted)."""
        assert self.conn is not None
        change: dict[str, Any] = {"old": {"name": name}}
        if ext is not None:
            change = {"new": {"name": name, "external_ids": ["map", sorted(ext.items())]}}
        self.conn.sendall(json.dumps({"id": None, "method": "update", "params": [
            "pyulogd-interfaces", {"Interface": {f"00000000-0000-4000-8000-{uuid_n:012d}": change}}]}).encode())
