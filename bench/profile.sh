#!/bin/bash
# profile.sh - where pyulogd spends its time under load: runs one throughput.py trial
# (pyulogd in netns gbB, a fixed-rate UDP flood through `log group 30`, or for `nfct` a
# flood of TCP connection attempts, each a NEW + DESTROY conntrack event, through
# NFCT->IP2STR->PRINTFLOW->LOGEMU) and attaches py-spy to the daemon while the flood runs.
# Prints the functions with the most samples (self and total) and leaves the flame graph
# and the collapsed stacks in OUTDIR.
#   sudo bench/profile.sh [json|logemu|nfct] [RATE=25000] [SECONDS=10] [OUTDIR=bench/results/profile]
# (for nfct RATE is connections/s, e.g. 8000; EXTRA='CT1_EXTRA=...' adds a --set for the template)
# Needs py-spy (pip install py-spy).  Sampling at 250 Hz, --nonblocking: the daemon is not
# stopped to be sampled, so the figures of the trial itself stay close to a normal run.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
HARNESS=${HARNESS:-$REPO/../shared/bench/throughput.py}
[ -f "$HARNESS" ] || { echo "harness not found: $HARNESS (set HARNESS=)" >&2; exit 1; }
command -v py-spy >/dev/null || { echo "py-spy not found: pip install py-spy" >&2; exit 1; }
which=${1:-json}; rate=${2:-25000}; secs=${3:-10}; out=${4:-$HERE/results/profile}
mode=udp
case $which in
    json) tpl=ulogd-json.conf.in ;;
    logemu) tpl=ulogd-logemu.conf.in ;;
    nfct) tpl=ulogd-nfct-logemu.conf.in; mode=ct ;;
    *) echo "json, logemu or nfct" >&2; exit 1 ;;
esac
extra=()
[ -n "${EXTRA:-}" ] && extra=(--set "$EXTRA")
mkdir -p "$out" /tmp/gbbench-profile
# the shared templates' comment lines are dropped (see compare.py: Runner.template)
grep -v '^\s*#' "$(dirname "$HARNESS")/configs/$tpl" > /tmp/gbbench-profile/$tpl
count=$(( rate * (secs + 4) ))
export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
python3 "$HARNESS" --daemon "$(python3 -c "import sys; print(sys.executable)") -m pyulogd -c {conf}" --template /tmp/gbbench-profile/$tpl \
    --set SYNC=1 "${extra[@]}" --mode $mode --count "$count" --rates "$rate" --workdir /tmp/gbbench-profile/trials \
    --max-seconds $((secs * 3 + 20)) --drain-timeout 60 --label "profile/$which" \
    --json "$out/profile-$which.jsonl" > "$out/profile-$which.trial.txt" &
tp=$!
pid=
for _ in $(seq 150); do
    pid=$(pgrep -f -n "pyulogd -c /tmp/gbbench-profile/trials/" || true)
    if [ $mode = ct ]; then
        # a ctnetlink socket (protocol 12) bound to the NEW group
        [ -n "$pid" ] && ip netns exec gbB awk '$2 == 12 && $4 ~ /[13579bdf]$/ {f = 1} END {exit !f}' /proc/net/netlink 2>/dev/null && break
    else
        [ -n "$pid" ] && grep -q "^ *30 " <(ip netns exec gbB cat /proc/net/netfilter/nfnetlink_log 2>/dev/null) && break
    fi
    sleep 0.1
done
[ -n "$pid" ] || { echo "pyulogd did not start" >&2; wait $tp; exit 1; }
sleep 1.5   # the flood starts 0.3 s after the bind; skip start-up
py-spy record --pid "$pid" --duration "$secs" --rate 250 --nonblocking --format raw \
    -o "$out/profile-$which.folded" >/dev/null 2>&1 || true
py-spy record --pid "$pid" --duration 2 --rate 250 --nonblocking \
    -o "$out/profile-$which.svg" >/dev/null 2>&1 || true
wait $tp
cat "$out/profile-$which.trial.txt"
python3 - "$out/profile-$which.folded" <<'EOF'
import collections, sys
self_, total, n = collections.Counter(), collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, _, cnt = line.rstrip().rpartition(" ")
    cnt = int(cnt)
    frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
              if " (" in f else f for f in stack.split(";")]
    n += cnt
    self_[frames[-1]] += cnt
    for f in set(frames):
        total[f] += cnt
print(f"\n{n} samples")
print("\nself time (where the CPU is):")
for f, c in self_.most_common(25):
    print(f"  {100 * c / n:5.1f}%  {f}")
print("\ntotal time (inclusive):")
for f, c in total.most_common(25):
    print(f"  {100 * c / n:5.1f}%  {f}")
# by stage of the pipeline (leaf frame -> stage); the select() share is time in epoll_wait
# that py-spy did not classify as idle (wake-ups), left out of the second column
groups = [("select/epoll_wait", ["EpollSelector.select"]),
          ("JSON render", ["<json renderer>", "JsonOutput."]),
          ("PRINTPKT", ["printpkt.py", "printer.py"]), ("LOGEMU", ["LogemuOutput.interp"]),
          ("file flush (write)", ["FileSink.flush", "Output.flush"]),
          ("BASE", ["base.py"]), ("IP2STR", ["ip2str.py"]), ("IFINDEX", ["ifindex.py"]),
          ("PRINTFLOW", ["printflow.py"]),
          ("NFCT decode", ["<nfct ", "codec/nfct.py"]),
          ("NFLOG decode", ["nflog template", "Decoder.", "split_now", "Batch."]),
          ("recv (netlink)", ["netlink.py"]),
          ("dispatch (feed/emit/Stack.run/loop/stats)", ["NflogInput", "NfctInput", "Source.emit", "Stack.run",
                                                         "loop.py", "stats.py", "service.py", "context.py"])]
stage = collections.Counter()
for line in open(sys.argv[1]):
    stack, _, cnt = line.rstrip().rpartition(" ")
    leaf = stack.split(";")[-1]
    stage[next((g for g, pats in groups if any(p in leaf for p in pats)), "other")] += int(cnt)
sel = stage["select/epoll_wait"]
print("\nby stage: % of samples, % of samples outside select()")
for g, c in stage.most_common():
    print(f"  {100 * c / n:5.1f}%  {'' if g == 'select/epoll_wait' else f'{100 * c / max(1, n - sel):5.1f}%':>6}  {g}")
EOF
