#!/usr/bin/env python3
"""The fixed, scripted traffic mix of the golden outputs (copied from ../shared/golden/traffic.py,
with --addrs so each test lab can use its own addresses).

    ip netns exec gbB traffic.py server [--max-seconds 30]   # echo servers in gbB
    ip netns exec gbA traffic.py client [--step NAME ...]    # the traffic, from gbA

Addresses are those of bench/netns-lab.sh (gbA 10.201.0.1 / fd00:201::1,
gbB 10.201.0.2 / fd00:201::2).  Every client socket binds a fixed source port
and ICMP echo uses a fixed id/sequence/payload, so that run-to-run differences
are limited to what the kernel randomises (IP ids, TCP sequence numbers and
timestamp options, times).  One change from the golden copy: the TCP echo server never
lets a socket change hands while packets can reach it (TCP_DEFER_ACCEPT; shutdown, then
close once the connection is over), so that every log statement sees the same UID=/GID=
on a packet (serve_tcp says why).  Steps run in this order, 0.15 s apart:

  icmp4-echo    ICMP echo request id 0x6201 seq 1, 32-byte payload (raw socket)
  icmp6-echo    ICMPv6 echo request id 0x6201 seq 1, same payload
  tcp4-accept   TCP 10.201.0.1:40001 -> :7001 (accepted): connect, send a line,
                read the echo, shutdown(WR), read EOF, close
  tcp4-drop     TCP SYN 10.201.0.1:40002 -> :7002 (dropped): one SYN, then close
  udp4-accept   UDP 40003 -> 7003 (accepted), the server answers "ok\\n"
  udp4-drop     UDP 40004 -> 7004 (dropped)
  tcp6-accept   TCP [fd00:201::1]:40005 -> [fd00:201::2]:7001, as tcp4-accept
  tcp6-drop     TCP SYN 40006 -> 7002 over IPv6 (dropped)
  udp6-accept   UDP 40007 -> 7003 over IPv6
  ip4-options   UDP 40008 -> 7003 with IPv4 option Record Route (IP_OPTIONS)
  ip4-frag      UDP 40009 -> 7003, 3000 bytes, DF off: 3 IPv4 fragments
  ip6-frag      UDP 40010 -> 7003 over IPv6, 3000 bytes: 3 IPv6 fragments
  tcp4-xmas     raw TCP 40011 -> 7001 with FIN|SYN|RST|PSH|ACK|URG set:
                conntrack calls it invalid, the lab drops and logs it

Each step prints one JSON line (step, t_start, t_end, note) on stdout.
"""
import argparse, json, select, signal, socket, struct, sys, threading, time

A4, B4 = "10.201.0.1", "10.201.0.2"
A6, B6 = "fd00:201::1", "fd00:201::2"
TCP_PORT, TCP_DROP, UDP_PORT, UDP_DROP = 7001, 7002, 7003, 7004
ICMP_ID, ICMP_SEQ = 0x6201, 1
PAYLOAD = b"gblab-icmp-payload-0123456789abc"  # 32 bytes


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF


# ---------------------------------------------------------------- server side
def serve_tcp(fam, addr, stop):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, TCP_PORT))
    # Each packet is logged by several log statements (one NFLOG group per daemon), and the
    # kernel reads the socket's owner (UID=/GID=) anew for each. A packet that reaches the
    # socket while accept() grafts it to its file, or while close() orphans it, can carry
    # the owner in one copy and not in the next. So the socket never changes hands while
    # packets can reach it: with TCP_DEFER_ACCEPT the connection is made by the client's
    # first data, after the log statements (no owner in any copy), and accept() returns
    # only then; the server closes only once the connection is over (shutdown, then the
    # client's last ACK seen: state CLOSE), with the socket still its own.
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
    s.listen(16)
    s.settimeout(0.2)
    while not stop.is_set():
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        c.settimeout(3)
        try:
            data = c.recv(1000)
            c.sendall(data)
            while c.recv(1000):
                pass
            c.shutdown(socket.SHUT_WR)
            wait_closed(c, time.monotonic() + 3)
        except OSError:
            pass
        c.close()


TCP_CLOSE = 7  # tcp_info.tcpi_state: the peer acknowledged our FIN (LAST_ACK -> CLOSE)


def wait_closed(c, deadline):
    while time.monotonic() < deadline:
        if c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == TCP_CLOSE:
            return
        time.sleep(0.005)


def serve_udp(fam, addr, stop):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, UDP_PORT))
    s.settimeout(0.2)
    while not stop.is_set():
        try:
            _, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        s.sendto(b"ok\n", peer)


def server(a):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ts = [threading.Thread(target=f, args=(fam, addr, stop), daemon=True)
          for f in (serve_tcp, serve_udp) for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::"))]
    for t in ts:
        t.start()
    print("server ready", flush=True)
    stop.wait(a.max_seconds)
    stop.set()
    for t in ts:
        t.join(1)


# ---------------------------------------------------------------- client side
def bound(fam, kind, sport):
    s = socket.socket(fam, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((A4 if fam == socket.AF_INET else A6, sport))
    return s


def icmp4_echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    hdr = struct.pack("!BBHHH", 8, 0, 0, ICMP_ID, ICMP_SEQ)
    pkt = hdr + PAYLOAD
    pkt = pkt[:2] + struct.pack("!H", csum(pkt)) + pkt[4:]
    s.sendto(pkt, (B4, 0))
    return wait_reply(s, lambda d: d[(d[0] & 15) * 4] == 0 and struct.unpack_from("!H", d, (d[0] & 15) * 4 + 4)[0] == ICMP_ID)


def icmp6_echo():
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    pkt = struct.pack("!BBHHH", 128, 0, 0, ICMP_ID, ICMP_SEQ) + PAYLOAD  # kernel fills the checksum
    s.sendto(pkt, (B6, 0))
    return wait_reply(s, lambda d: d[0] == 129 and struct.unpack_from("!H", d, 4)[0] == ICMP_ID)


def wait_reply(s, ok, timeout=1.0):
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([s], [], [], end - time.time())
        if r and ok(s.recv(2048)):
            s.close()
            return "reply"
    s.close()
    return "no reply"


def tcp_accept(fam, dst, sport):
    s = bound(fam, socket.SOCK_STREAM, sport)
    s.settimeout(2)
    s.connect((dst, TCP_PORT))
    line = b"gblab tcp%d\n" % (4 if fam == socket.AF_INET else 6)
    s.sendall(line)
    got = b""
    while len(got) < len(line):
        d = s.recv(100)
        if not d:
            break
        got += d
    time.sleep(0.05)
    s.shutdown(socket.SHUT_WR)
    while s.recv(100):
        pass
    s.close()
    return "echo ok" if got == line else f"echo mismatch {got!r}"


def tcp_drop(fam, dst, sport):
    s = bound(fam, socket.SOCK_STREAM, sport)
    s.setblocking(False)
    try:
        s.connect((dst, TCP_DROP))
    except BlockingIOError:
        pass
    time.sleep(0.3)  # below the 1 s initial RTO: exactly one SYN leaves
    s.close()
    return "one SYN"


def udp(fam, dst, sport, dport, data, opts=None, frag=False, expect_reply=True):
    s = bound(fam, socket.SOCK_DGRAM, sport)
    if opts is not None:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, opts)
    if frag and fam == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: DF off
    s.sendto(data, (dst, dport))
    res = "sent"
    if expect_reply:
        s.settimeout(1)
        try:
            res = "reply " + s.recv(100).decode().strip()
        except socket.timeout:
            res = "no reply"
    s.close()
    return res


def tcp4_xmas():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    sport = 40011
    tcp = struct.pack("!HHIIBBHHH", sport, TCP_PORT, 0x01020304, 0x05060708, 5 << 4, 0x3F, 8192, 0, 0)
    pseudo = socket.inet_aton(A4) + socket.inet_aton(B4) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    s.sendto(tcp, (B4, 0))
    s.close()
    return "sent"


# Record Route with room for 2 addresses (type 7, len 11, ptr 4) + End of Options
RR_OPT = bytes([7, 11, 4]) + b"\0" * 8 + b"\0"

STEPS = [
    ("icmp4-echo", icmp4_echo),
    ("icmp6-echo", icmp6_echo),
    ("tcp4-accept", lambda: tcp_accept(socket.AF_INET, B4, 40001)),
    ("tcp4-drop", lambda: tcp_drop(socket.AF_INET, B4, 40002)),
    ("udp4-accept", lambda: udp(socket.AF_INET, B4, 40003, UDP_PORT, b"gblab udp4\n")),
    ("udp4-drop", lambda: udp(socket.AF_INET, B4, 40004, UDP_DROP, b"gblab udp4 drop\n", expect_reply=False)),
    ("tcp6-accept", lambda: tcp_accept(socket.AF_INET6, B6, 40005)),
    ("tcp6-drop", lambda: tcp_drop(socket.AF_INET6, B6, 40006)),
    ("udp6-accept", lambda: udp(socket.AF_INET6, B6, 40007, UDP_PORT, b"gblab udp6\n")),
    ("ip4-options", lambda: udp(socket.AF_INET, B4, 40008, UDP_PORT, b"gblab ip options\n", opts=RR_OPT)),
    ("ip4-frag", lambda: udp(socket.AF_INET, B4, 40009, UDP_PORT, bytes(range(256)) * 11 + b"F" * 184, frag=True)),
    ("ip6-frag", lambda: udp(socket.AF_INET6, B6, 40010, UDP_PORT, bytes(range(256)) * 11 + b"F" * 184, frag=True)),
    ("tcp4-xmas", tcp4_xmas),
]


def client(a):
    names = [n for n, _ in STEPS]
    for n in a.step or []:
        if n not in names:
            sys.exit(f"unknown step {n}; steps: {' '.join(names)}")
    rc = 0
    for name, fn in STEPS:
        if a.step and name not in a.step:
            continue
        t0 = time.time()
        try:
            note = fn()
        except Exception as e:  # keep going: later steps still give useful records
            note, rc = f"error {e!r}", 1
        print(json.dumps(dict(step=name, t_start=round(t0, 6), t_end=round(time.time(), 6), note=note)), flush=True)
        time.sleep(a.gap)
    return rc


def main():
    global A4, B4, A6, B6
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=["client", "server", "list"])
    ap.add_argument("--step", action="append", help="client: run only these steps")
    ap.add_argument("--gap", type=float, default=0.15, help="client: seconds between steps")
    ap.add_argument("--max-seconds", type=float, default=60, help="server: stop after this long")
    ap.add_argument("--addrs", help="client4,server4,client6,server6 (default: the golden lab's)")
    a = ap.parse_args()
    if a.addrs:
        A4, B4, A6, B6 = a.addrs.split(",")
    if a.role == "list":
        print("\n".join(n for n, _ in STEPS))
    elif a.role == "server":
        server(a)
    else:
        sys.exit(client(a))


if __name__ == "__main__":
    main()
