"""GRAPHITE against a real carbon-cache (Debian package graphite-carbon), fed by real NFACCT
records: in a throw-away namespace, iptables rules feed nfacct counters, pyulogd runs
``NFACCT -> GRAPHITE`` and a private carbon-cache (own config, storage directory and a spare
loopback port) stores the metrics; whisper-fetch must read back the packets and bytes the
kernel counted. Carbon starts only after pyulogd has been running (down at start), and is
restarted in the middle: nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyulogd.ctl import status
from tests.linux.test_nfacct_live import ENV, WANT, _skip_reason, ns, sh, traffic, wait_for  # noqa: F401 - ns is a fixture

CARBON = shutil.which("carbon-cache")
FETCH = shutil.which("whisper-fetch") or shutil.which("whisper-fetch.py")
_skip = _skip_reason() or (None if CARBON and FETCH else "needs carbon-cache and whisper-fetch "
                           "(Debian packages graphite-carbon, python3-whisper)")
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]
PORT = 22003


def carbon_conf(d: Path) -> Path:
    for sub in ("whisper", "log", "run", "lists"):
        (d / sub).mkdir(exist_ok=True)
    (d / "storage-schemas.conf").write_text("[all]\npattern = .*\nretentions = 1s:1h\n")
    conf = d / "carbon.conf"
    conf.write_text(f"""[cache]
STORAGE_DIR = {d}/
LOCAL_DATA_DIR = {d}/whisper/
WHITELISTS_DIR = {d}/lists/
CONF_DIR = {d}/
LOG_DIR = {d}/log/
PID_DIR = {d}/run/
ENABLE_TAGS = False
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 10000
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {PORT}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {PORT + 1}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {PORT + 2}
WHISPER_AUTOFLUSH = True
CACHE_WRITE_STRATEGY = naive
""")
    return conf


def start_carbon(ns_name: str, d: Path) -> subprocess.Popen[bytes]:
    conf = carbon_conf(d)
    p = subprocess.Popen(["ip", "netns", "exec", ns_name, str(CARBON), f"--config={conf}", "--nodaemon", "start"],
                         stdout=(d / "carbon.out").open("ab"), stderr=subprocess.STDOUT)
    end = time.monotonic() + 20
    while f":{PORT:X} " not in sh("cat", "/proc/net/tcp", ns=ns_name).stdout:
        assert time.monotonic() < end and p.poll() is None, (d / "carbon.out").read_text()
        time.sleep(0.1)
    return p


def stop_carbon(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def whisper_sum(d: Path, metric: str) -> float:
    path = d / "whisper" / (metric.replace(".", "/") + ".wsp")
    if not path.exists():
        return -1
    r = subprocess.run([str(FETCH), "--from", str(int(time.time()) - 3000), str(path)], capture_output=True,
                       text=True, timeout=30)
    return sum(float(v) for _, v in (line.split() for line in r.stdout.splitlines()) if v != "None")


def counters(control: Path) -> dict[str, int]:
    """The running daemon's counters, from its control socket (pyulogdctl status --json)."""
    doc = json.loads(status.ask(str(control), "status"))
    return {k: int(v) for k, v in doc["counters"].items()}


def dumps_after_now(control: Path, timeout: float = 30) -> None:
    """Wait until a dump requested after this call has ended: what the kernel counted until
    now is then in records, on its way to GRAPHITE (queued while Carbon is away)."""
    first = counters(control).get("nfacct.acct1.dumps", 0) + 1
    # Dump ``first`` is requested after now; once ``first + 1`` is requested, ``first``
    # has ended (its answer read, or closed as incomplete: counted, and refused below).
    wait_for(lambda: counters(control).get("nfacct.acct1.dumps", 0) > first, timeout, f"dump {first} to end")


def whisper_totals(cdir: Path) -> dict[str, tuple[float, float]]:
    return {name: (whisper_sum(cdir, f"pyu.fw.{name}.pkts"), whisper_sum(cdir, f"pyu.fw.{name}.bytes"))
            for name in WANT}  # fmt: skip


def test_nfacct_to_carbon(ns: str, tmp_path: Path) -> None:  # noqa: F811
    control = tmp_path / "run" / "control.sock"
    conf = tmp_path / "ulogd.conf"
    conf.write_text(f"""[global]
logfile="{tmp_path}/ulogd.log"
loglevel=3
control_socket="{control}"
stack=acct1:NFACCT,g1:GRAPHITE

[acct1]
pollinterval=1
timestamp=1

[g1]
host="127.0.0.1"
port="{PORT}"
prefix="pyu.fw"
spool_dir="{tmp_path}/spool"
""")
    log = tmp_path / "ulogd.log"
    daemon = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "pyulogd", "-c", str(conf)],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    carbon = None
    cdir = tmp_path / "carbon"
    cdir.mkdir()
    once = {n: (float(p), float(b)) for n, (p, b) in WANT.items()}
    twice = {n: (2.0 * p, 2.0 * b) for n, (p, b) in WANT.items()}
    try:
        wait_for(lambda: daemon.poll() is not None or "initialization finished" in (log.read_text() if
                 log.exists() else ""), 30, "pyulogd to start")  # fmt: skip
        assert daemon.poll() is None
        # Carbon is down: pyulogd keeps the dumps of the first traffic in its queue.
        traffic(ns)
        dumps_after_now(control)
        assert counters(control).get("graphite.g1.sent", 0) == 0
        carbon = start_carbon(ns, cdir)
        # Every line of the first traffic stored before Carbon goes: what it may lose in
        # flight at its stop is then dumps of zeros, which change no sum.
        wait_for(lambda: whisper_totals(cdir) == once, 60, f"Carbon to store {once}")
        stop_carbon(carbon)  # restart in the middle
        carbon = None
        traffic(ns)  # counted while Carbon is away
        dumps_after_now(control)
        carbon = start_carbon(ns, cdir)
        wait_for(lambda: whisper_totals(cdir) == twice, 60, f"Carbon to store {twice}")
        got = counters(control)
        assert got.get("nfacct.acct1.dumps_incomplete", 0) == 0, got
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=15)
        if carbon is not None:
            stop_carbon(carbon)
    text = log.read_text()
    assert daemon.returncode == 0, err
    assert "graphite.g1.send_failures" not in text, text
    assert os.path.exists(cdir / "whisper" / "pyu" / "fw" / "pyu_idle" / "pkts.wsp")
