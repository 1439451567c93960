#!/usr/bin/env python3
"""What NEUTRON costs on the packet path (issue 15, "must hold"): the same packets through
NFLOG -> BASE -> IFINDEX -> IP2STR -> JSON with and without NEUTRON before JSON, in one run.

    python3 bench/neutron_cost.py [--rounds 2000]                       # CPU per packet (no kernel)
    python3 bench/neutron_cost.py --callgrind [--rounds 100]            # instructions per packet
    sudo python3 bench/neutron_cost.py --live [--rates 5000,10000,...]  # lossless rate, real kernel

**CPU per packet** (default): replays NFLOG datagrams as the kernel sends them for a DROP flood
through a router (18 packets per datagram, FWaaS's numeric prefix, ``oob.in``=qg-, ``oob.out``=qr-,
both resolved by a mapping file of 200 ports; NEUTRON with the recorded FWaaS ruleset's verdicts)
through both stacks, alternating, best of 3; the ratio of the two costs is the ratio of the
rates they can sustain when the CPU is the limit, as it is for a flood.

**Instructions per packet** (``--callgrind``): the same replay under valgrind's callgrind, each
stack in a process of its own, minus a run of 0 rounds (start-up): a count that other jobs on a
shared machine do not disturb, where CPU times do (the two CPU figures of one run can differ
by 30 % under load).

**Lossless rate** (``--live``, root; run it on a quiet machine, ``uptime`` below 1.5): two
namespaces of its own (``nfb<random>-a`` -> ``nfb<random>-b``, removed at the end), the veth in
``b`` named as a router interface (``qr-...``), a rule logging UDP to port 5001 to NFLOG group 7
in ``b``; for each stack and rate the daemon (``python -m pyulogd``, this checkout) runs in ``b``
and a sender in ``a`` sends for ``--seconds``: lossless when the records written equal the
packets sent and the daemon counted no loss. Reports each stack's highest lossless rate and
their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests/builders, the recorded ruleset

from pyulogd.codec import neutronrules  # noqa: E402
from pyulogd.codec.nftruleset import Ruleset  # noqa: E402
from pyulogd.core.config import parse_text  # noqa: E402
from pyulogd.core.context import Context  # noqa: E402
from pyulogd.daemon.service import Service  # noqa: E402
from pyulogd.io.loop import Loop  # noqa: E402
from pyulogd.io.rtnl import LinkCache  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from nslab import send, sh, veth_lab, wait_for  # noqa: E402

BASE_STACK = "log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR"
STACKS = {"without": f"{BASE_STACK},json1:JSON", "with": f"{BASE_STACK},neutron1:NEUTRON,json1:JSON"}
QR, QG = "qr-1a2b3c4d-5e", "qg-9f8e7d6c-5b"
VEC = ROOT / "tests" / "vectors" / "neutron"


def mapping(path: Path, n: int = 200) -> None:
    """A mapping file of ``n`` ports, among them the router's two."""
    ports = [{"id": "1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d", "network_id": str(uuid.UUID(int=1)),
              "project_id": "736672c700cd43e1bd321aeaf940365c", "device_owner": "network:router_interface",
              "device_id": str(uuid.UUID(int=9)), "fixed_ips": [{"ip_address": "10.0.0.1"}]},
             # Neutron creates a router's gateway port with an empty project (_create_gw_port)
             {"id": "9f8e7d6c-5b4a-4c3d-8e2f-1a0b9c8d7e6f", "network_id": str(uuid.UUID(int=2)),
              "project_id": "", "device_owner": "network:router_gateway", "device_id": str(uuid.UUID(int=9)),
              "fixed_ips": [{"ip_address": "172.24.4.2"}]}]  # fmt: skip
    for i in range(n - 2):
        ports.append({"id": str(uuid.UUID(int=(i + 100) << 64)), "network_id": str(uuid.UUID(int=1)),
                      "project_id": f"{i:032x}", "device_owner": "compute:nova",
                      "fixed_ips": [{"ip_address": f"10.0.{i // 250}.{i % 250 + 2}"}]})  # fmt: skip
    path.write_text(json.dumps({"ports": ports}))


def flood(npkt: int = 44, per_batch: int = 18) -> list[bytes]:
    """NFLOG datagrams of a DROP flood forwarded from qg- (3) to qr- (2), FWaaS's prefix."""
    from tests.builders.nflog import build_packet

    mac = bytes.fromhex("02000000000b02000000000a0800")
    out: list[bytes] = []
    batch: list[bytes] = []
    for i in range(npkt):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 92, (4242 + i) & 0xFFFF, 0x4000, 63, 17, 0,
                         bytes([198, 51, 100, 1]), bytes([10, 0, 0, 4]))  # fmt: skip
        udp = struct.pack("!HHHH", 40000 + i, 5001, 72, (0x1234 + i) & 0xFFFF)
        batch.append(build_packet(family=2, group=7, hook=2, prefix=b"777001", indev=3, outdev=2,
                                  hwaddr=mac[6:12], hwtype=1, hwheader=mac, timestamp=(1795764135, 100000 + 37 * i),
                                  payload=ip + udp + bytes(64)))  # fmt: skip
        if len(batch) == per_batch or i == npkt - 1:
            out.append(b"".join(batch) + struct.pack("=IHHII", 20, 3, 2, 0, 0) + bytes(4))
            batch = []
    return out


def cpu_run(which: str, rounds: int, tmp: str) -> float:
    text = (f"[global]\nstack={STACKS[which]}\n[log1]\ngroup=7\n[json1]\nfile=\"{tmp}/{which}.json\"\n"
            f"[neutron1]\novsdb=\"\"\nmapping=\"{tmp}/ports.json\"\nha_confs=\"\"\nruleset=0\n")  # fmt: skip
    ctx = Context(loop=Loop(), hostname="vm")
    cache = LinkCache(ctx, kernel=False)
    cache.names.update({1: "lo", 2: QR, 3: QG})
    ctx.ifcache = cache
    svc = Service(f"{tmp}/u.conf", ctx)
    svc.load_config(parse_text(text))
    stack = svc.stacks[0]
    for inst in stack.instances[1:]:
        inst.start()
        svc.started.append(inst)
        if inst.name == "NEUTRON":  # the verdicts of the recorded FWaaS chains, as if read from the kernel
            doc = json.loads((VEC / "ruleset.json").read_text())
            rs = Ruleset.parse(doc)
            rs.add_iptables("ip", (VEC / "iptables-save.txt").read_text())
            inst.resolver.rules[None] = neutronrules.build(doc, rs)  # type: ignore[attr-defined]
    svc.sinks.append(stack.sink)
    feed = stack.source.feed  # type: ignore[attr-defined]
    bufs = flood()
    t0 = time.process_time()
    for _ in range(rounds):
        for b in bufs:
            feed(b)
            svc.flush()
    cpu = time.process_time() - t0
    svc.stop()
    return cpu / max(1, rounds * 44) * 1e6


def micro(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        mapping(Path(tmp) / "ports.json")
        best = {"without": float("inf"), "with": float("inf")}
        for _ in range(3):
            for which in ("without", "with"):
                best[which] = min(best[which], cpu_run(which, rounds, tmp))
        with open(f"{tmp}/with.json") as f:
            sample = json.loads(f.readline())
    ratio = best["without"] / best["with"]
    print(f"without NEUTRON: {best['without']:.2f} µs CPU per packet")
    print(f"with NEUTRON:    {best['with']:.2f} µs CPU per packet")
    print(f"rate with / rate without (CPU-bound): {ratio:.2f} (must be >= 0.80)")
    keys = ("neutron.port_id", "neutron.project_id", "neutron.direction", "audit.action")
    print("a record with NEUTRON:", {k: sample.get(k) for k in keys})
    return {"without_us": best["without"], "with_us": best["with"], "ratio": ratio}


def callgrind(rounds: int) -> dict[str, Any]:
    """Instructions per packet of each stack (callgrind's Ir, start-up subtracted)."""
    def ir(which: str, n: int) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "cg.out"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                            __file__, "--one", which, "--rounds", str(n)], check=True, capture_output=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))  # fmt: skip
            for line in out.read_text().splitlines():
                if line.startswith("totals:") or line.startswith("summary:"):
                    return int(line.split()[1])
        raise RuntimeError("no totals in callgrind's output")

    res: dict[str, Any] = {}
    for which in ("without", "with"):
        res[which] = (ir(which, rounds) - ir(which, 0)) / (rounds * 44)
        print(f"{which} NEUTRON: {res[which]:,.0f} instructions per packet")
    res["ratio"] = res["without"] / res["with"]
    print(f"rate with / rate without (instruction-bound): {res['ratio']:.2f} (must be >= 0.80)")
    return res


# -- live lossless rates


def live_trial(which: str, ns_b: str, ns_a: str, rate: int, secs: float, tmp: Path) -> tuple[int, int, bool]:
    out = tmp / f"{which}-{rate}.json"
    conf = tmp / f"{which}.conf"
    conf.write_text(f"[global]\nloglevel=3\nlogfile=\"{tmp}/{which}.log\"\nstack={STACKS[which]}\n[log1]\ngroup=7\n"
                    f"[json1]\nfile=\"{out}\"\n[neutron1]\novsdb=\"\"\nmapping=\"{tmp}/ports.json\"\n"
                    f"ha_confs=\"\"\n")  # fmt: skip
    log = tmp / f"{which}.log"
    log.write_text("")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    d = subprocess.Popen(["ip", "netns", "exec", ns_b, sys.executable, "-m", "pyulogd", "-c", str(conf),
                          "--no-realtime"], env=env, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        if not wait_for(log, "entering main loop", 15, d):
            raise RuntimeError(f"daemon did not start: {log.read_text()[-500:]}")
        sent = send(ns_a, rate, secs, "10.97.0.2", python=sys.executable)
        time.sleep(1.0)  # the daemon drains its socket
    finally:
        d.terminate()
        d.wait(15)
    text = log.read_text()
    lost = "enobufs" in text.split("counters at exit:")[-1] if "counters at exit:" in text else True
    records = sum(1 for _ in out.open()) if out.exists() else 0
    return sent, records, records == sent and not lost


def live(rates: list[int], secs: float) -> dict[str, Any]:
    tag = f"nfb{secrets.token_hex(3)}"
    a, b = f"{tag}-a", f"{tag}-b"
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        mapping(tmp / "ports.json")
        with veth_lab(a, b, "eth0", QR, "10.97.0.1/24", "10.97.0.2/24"):
            sh("nft", "-f", "-", ns=b, input="table inet nfb {\n chain input_log {\n"
               " type filter hook input priority 0;\n"
               ' udp dport 5001 log prefix "777001" group 7 drop\n }\n}\n')  # fmt: skip
            for which in ("without", "with"):
                best = 0
                for rate in rates:
                    sent, records, ok = live_trial(which, b, a, rate, secs, tmp)
                    print(f"{which:8s} {rate:6d}/s: sent {sent}, records {records}, {'lossless' if ok else 'LOST'}")
                    if not ok:
                        break
                    best = rate
                res[which] = best
    ratio = res["with"] / res["without"] if res.get("without") else float("nan")
    print(f"highest lossless rate: without {res['without']}/s, with {res['with']}/s, ratio {ratio:.2f}")
    res["ratio"] = ratio
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--live", action="store_true")
    ap.add_argument("--rates", default="5000,10000,15000,20000,25000,30000,40000")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--one", choices=sorted(STACKS), help=argparse.SUPPRESS)  # one stack, for --callgrind
    a = ap.parse_args()
    os.environ.setdefault("TZ", "UTC")
    time.tzset()
    if a.one:
        with tempfile.TemporaryDirectory() as tmp:
            mapping(Path(tmp) / "ports.json")
            cpu_run(a.one, a.rounds, tmp)
        return 0
    if a.callgrind:
        callgrind(a.rounds)
        return 0
    micro(a.rounds)
    if a.live:
        live([int(r) for r in a.rates.split(",")], a.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
