#!/usr/bin/env python3
"""Fuzz pyulogd-netns-wrapper's handling of namespace names (issue 10), for long runs.

    python3 bench/fuzz/fuzz_netns_names.py --n 1000000 [--seed 1]

A namespace name is whatever bytes ip's caller chose.  For every generated name (bytes,
decoded as argv is) this checks:

* ``classify(["netns", "add", name])`` hands the name on whole;
* ``shown(name)`` and a log line carrying the raw name are one line of printable text;
* the name is refused by ``name_problem()`` exactly when an independent definition of a safe
  name (a regular expression over the bytes) refuses it, and a refused name makes ``render()``
  raise;
* an accepted name renders two templates (placeholders in comments, quoted and unquoted
  values) into configs that ``pyulogd.core.config.parse_text`` reads as exactly the
  templates' sections and keys, each value the template's with the placeholders substituted;
  its file stem is ``ns-`` and 32 hex digits.

Names come from a seeded ``random.Random`` (no dependency, same run for the same seed): a
corpus of Neutron names and hostile ones (the issue's exploit, quotes, line breaks of every
kind ``str.splitlines()`` knows, ``#``, ``[``, non-UTF-8 bytes, 255 and 256 bytes) mutated by
byte flips, insertions of such tokens, deletions, duplications, splices and truncations;
plus random bytes and names built from the safe alphabet, so that both outcomes are frequent.
On the first failure it prints the input (escaped and as hex), the seed and the iteration,
and exits 1.  The short, in-suite version is tests/unit/test_netns_wrapper.py (hypothesis).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from pathlib import Path

from pyulogd.core.config import parse_text
from pyulogd.daemon.netns_wrapper import (
    NAME_MAX,
    Settings,
    classify,
    file_stem,
    is_stem,
    log_safe,
    name_problem,
    render,
    shown,
)

TEMPLATES = [
    """# per-namespace config for @NETNS@ (router @NETNS_ID@)
[global]
logfile="/var/log/pyulogd/@NETNS@.log"
loglevel=5
stack=log1:NFLOG,base1:BASE,json1:JSON

[log1]
group=10

[json1]
file=/var/log/pyulogd/@NETNS_PREFIX@/@NETNS_ID@.json
sync=1
# pidfile @PIDFILE@ in @RUNDIR@
""",
]
_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "netns-wrapper" / "netns-ulogd.conf.in"
if _EXAMPLE.exists():
    TEMPLATES.append(_EXAMPLE.read_text())

# The independent definition of a safe name (docs/netns-wrapper.md, "Which names get a daemon").
SAFE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
RID = b"4f0c2e3a-9b1d-4c55-8a2e-1f2d3c4b5a69"
EXPLOIT = (b'qrouter-e"\nstack=ux9:UNIXSOCK,j9:JSON\n[ux9]\nsocket_path="pyulogd-evil.sock"\nperms=0666\n'
           b'[j9]\nfile="pyulogd-evil.json"\n[zz\n#')
CORPUS = [
    b"qrouter-" + RID, b"snat-" + RID, b"fip-" + RID, b"qdhcp-" + RID, b"ovnmeta-" + RID, b"qrouter-",
    b"plain", b"a", b"a.b_c-d", b"A" * 255, b"A" * 256, b"q-" + b"x" * 253, EXPLOIT,
    b'qrouter-a"b', b"qrouter-a\nb", b"qrouter-a\rb", b"qrouter-#x", b"[qrouter]", b"qrouter-\xff\xfe",
    b"qrouter-..", b".hidden", b"-x", b"", b".", b"..",
]
TOKENS = [
    b'"', b"'", b"\n", b"\r", b"\r\n", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85",
    b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"#", b"[", b"]", b"=", b" ", b"\t", b"\x00", b"/", b"..", b".",
    b"-", b"_", b"@NETNS@", b"@RUNDIR@", b"@", b"\\", b"\xff", b"\xc3", b"\xc3\xa9", b"\xed\xa0\x80",
    b"\x7f", b"*", b"?", b"%s", b"\x1b[2J", b":", b",", b";",
]


class Failure(Exception):
    pass


def shape(text: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    cfg = parse_text(text)
    sections = sorted([*cfg.sections.values(), *cfg.duplicates], key=lambda s: s.line)
    return [(s.name, [(e.key, e.value) for e in s.entries]) for s in sections]


TEMPLATE_SHAPES = [shape(t) for t in TEMPLATES]


def expected(template_shape: list[tuple[str, list[tuple[str, str | None]]]], name: str,
             s: Settings) -> list[tuple[str, list[tuple[str, str | None]]]]:
    prefix, _, ident = name.partition("-")
    subst = {"@NETNS_PREFIX@": prefix if ident else "", "@NETNS_ID@": ident or name, "@NETNS@": name,
             "@RUNDIR@": s.rundir, "@PIDFILE@": os.path.join(s.rundir, file_stem(name) + ".pid")}

    def sub(v: str | None) -> str | None:
        if v is None:
            return None
        for k, x in subst.items():
            v = v.replace(k, x)
        return v

    return [(sec, [(k, sub(v)) for k, v in entries]) for sec, entries in template_shape]


def check(raw: bytes, s: Settings) -> bool:
    """Raise Failure if a property does not hold; True if the name was accepted."""
    name = os.fsdecode(raw)  # what argv gives Python for these bytes
    what = classify(["netns", "add", name])
    if (what.kind, what.name) != ("add", name):
        raise Failure(f"classify lost the name: {what!r}")
    text = shown(name)
    if not (text.isascii() and text.isprintable()):
        raise Failure(f"shown() is not printable ASCII: {text!r}")
    line = log_safe(f"netns {name}: x")
    if not line.isprintable():
        raise Failure(f"log line is not printable: {line!r}")
    safe = SAFE.match(raw) is not None and b".." not in raw and len(raw) <= NAME_MAX
    problem = name_problem(name)
    if (problem is None) != safe:
        raise Failure(f"name_problem() says {problem!r}, the independent definition says safe={safe}")
    if problem is not None:
        try:
            render(TEMPLATES[0], name, s)
        except ValueError:
            return False
        raise Failure("render() accepted a refused name")
    for template, template_shape in zip(TEMPLATES, TEMPLATE_SHAPES, strict=True):
        got = shape(render(template, name, s))
        if got != expected(template_shape, name, s):
            raise Failure(f"rendered config differs from the template: {got!r}")
    stem = file_stem(name)
    if not is_stem(stem):
        raise Failure(f"bad file stem {stem!r}")
    return True


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randint(0, len(b))
        if op == 0 and b:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert a token
            b[pos:pos] = rng.choice(TOKENS)
        elif op == 2 and b:  # delete a range
            end = min(len(b), pos + rng.randint(1, 8))
            del b[pos:end]
        elif op == 3 and b:  # duplicate a range
            start = rng.randrange(len(b))
            b[pos:pos] = b[start:start + rng.randint(1, 16)]
        elif op == 4 and b:  # a random byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 5:  # splice another corpus entry
            other = rng.choice(CORPUS)
            b[pos:pos] = other[: rng.randint(0, len(other))]
        elif op == 6 and b:  # truncate
            del b[rng.randint(0, len(b)):]
        elif op == 7 and b:  # a safe character: keeps many mutants acceptable
            b[rng.randrange(len(b))] = rng.choice(ALPHABET)
        else:  # pad to around ip's limit
            b.extend(rng.choice(ALPHABET) for _ in range(max(0, rng.randint(250, 258) - len(b))))
    return bytes(b)


def generate(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.15:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, rng.choice((8, 40, 300)))))
    if r < 0.35:
        n = rng.choice((1, 2, rng.randint(1, 60), rng.randint(200, 257)))
        return bytes(rng.choice(ALPHABET) for _ in range(n))
    return mutate(rng, rng.choice(CORPUS))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=100_000, help="names to try (default 100000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--report-every", type=int, default=100_000, help="progress line every N names")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    s = Settings(rundir="/run/pyulogd")
    accepted = 0
    t0 = time.monotonic()
    for i in range(args.n):
        raw = generate(rng)
        try:
            accepted += check(raw, s)
        except Exception as e:  # a Failure, or anything else the wrapper's code raised
            print(f"FAILED at iteration {i} (seed {args.seed}): {type(e).__name__}: {e}")
            print(f"  name: {shown(os.fsdecode(raw), 1000)}")
            print(f"  hex:  {raw.hex()}")
            return 1
        if args.report_every and (i + 1) % args.report_every == 0:
            print(f"{i + 1} names, {accepted} accepted, {time.monotonic() - t0:.0f} s", flush=True)
    dt = time.monotonic() - t0
    print(f"OK: {args.n} names (seed {args.seed}), {accepted} accepted and rendered, "
          f"{args.n - accepted} refused, {dt:.1f} s ({args.n / dt if dt else 0:.0f} names/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
