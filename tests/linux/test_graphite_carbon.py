"""GRAPHITE against a real carbon-cache (Debian package graphite-carbon), fed by real NFACCT
records: in a throw-away namespace, iptables rules feed nfacct counters, pyulogd runs
``NFACCT -> GRAPHITE`` and a private carbon-cache (own config, storage directory and a spare
loopback port) stores the metrics; whisper-fetch must read back the packets and bytes the
kernel counted. Carbon starts only after pyulogd has been running (down at start), and is
restarted in the middle: nothing is lost."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.linux.test_nfacct_live import ENV, WANT, _skip_reason, ns, sh, traffic  # noqa: F401 - ns is a fixture

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


def test_nfacct_to_carbon(ns: str, tmp_path: Path) -> None:  # noqa: F811
    conf = tmp_path / "ulogd.conf"
    conf.write_text(f"""[global]
logfile="{tmp_path}/ulogd.log"
loglevel=3
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
    daemon = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "pyulogd", "-c", str(conf)],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    carbon = None
    cdir = tmp_path / "carbon"
    cdir.mkdir()
    try:
        time.sleep(1.5)  # carbon is down: pyulogd queues the first dumps
        assert daemon.poll() is None
        traffic(ns)
        time.sleep(1.2)
        carbon = start_carbon(ns, cdir)
        time.sleep(3)
        stop_carbon(carbon)  # restart in the middle
        traffic(ns)  # counted while carbon is away
        time.sleep(1.5)
        carbon = start_carbon(ns, cdir)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            got = {name: (whisper_sum(cdir, f"pyu.fw.{name}.pkts"), whisper_sum(cdir, f"pyu.fw.{name}.bytes"))
                   for name in WANT}  # fmt: skip
            if got == {n: (2 * p, 2 * b) for n, (p, b) in WANT.items()}:
                break
            time.sleep(0.5)
        assert got == {n: (2 * p, 2 * b) for n, (p, b) in WANT.items()}
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=15)
        if carbon is not None:
            stop_carbon(carbon)
    log = (tmp_path / "ulogd.log").read_text()
    assert daemon.returncode == 0, err
    assert "graphite.g1.send_failures" not in log, log
    assert os.path.exists(cdir / "whisper" / "pyu" / "fw" / "pyu_idle" / "pkts.wsp")
