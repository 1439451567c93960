#!/bin/bash
# A clean Debian 12 to prove the README and the package in: debootstrap --variant=minbase
# bookworm, made once and cached outside the repository, then used through a throwaway
# overlay so that every run starts from the same fresh system. Run as root.
#
#   scripts/debian-chroot.sh base              make the cached base (once; later calls reuse it)
#   scripts/debian-chroot.sh demo              a fresh clone of this repository's HEAD at
#                                              /root/pyulogd inside, then the README's command 1
#   scripts/debian-chroot.sh run 'CMD'         run CMD (bash) inside; the clone is at /root/pyulogd
#   options (before the subcommand):
#     --keep         keep the overlay's upper directory (printed) instead of removing it
#     --with FILE    copy FILE (e.g. a built .deb) into /root/in/ inside
#     --no-clone     no clone of the repository inside
#     --shared DIR   bind DIR read-only at /root/shared inside (the golden outputs, which the
#                    tests look for at ../shared beside the clone)
#
# How it is isolated: everything runs in a private mount namespace (unshare --mount), so the
# overlay, /proc, /sys, /dev, /run and whatever the command mounts (`ip netns add` mounts
# /run/netns/NAME) vanish with the last process, even when the command fails or is killed.
# The chroot shares the machine's network namespace (it needs Debian's mirror): the demo
# and the tests make their own namespaces inside, in the chroot's own /run/netns.
#
# Cache: PYULOGD_CHROOT_CACHE (default /var/cache/pyulogd-chroot): bookworm/ (the base),
# archives/ (downloaded .debs, linked into every run so a rerun downloads nothing), run.*/
# (overlays of runs in progress or kept). Mirror: PYULOGD_DEBIAN_MIRROR.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${PYULOGD_CHROOT_CACHE:-/var/cache/pyulogd-chroot}
mirror=${PYULOGD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
keep=0 clone=1 with=() shared=

die() { echo "debian-chroot: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"

while [ $# -gt 0 ]; do
    case $1 in
        --keep) keep=1; shift ;;
        --no-clone) clone=0; shift ;;
        --shared) [ $# -ge 2 ] || die "--shared needs a directory"; shared=$(realpath -e "$2"); shift 2 ;;
        --with) [ $# -ge 2 ] || die "--with needs a file"; with+=("$(realpath -e "$2")"); shift 2 ;;
        *) break ;;
    esac
done
cmd=${1:-}
[ -n "$cmd" ] || die "usage: $0 [--keep] [--no-clone] [--with FILE] base|demo|run 'CMD'"
shift

make_base() {
    mkdir -p "$cache/archives/partial"
    chmod 0755 "$cache"
    # One maker at a time; the others wait and then find it made.
    exec 9>"$cache/.lock"
    flock 9
    if [ ! -e "$cache/bookworm/.complete" ]; then
        command -v debootstrap >/dev/null || {
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
        }
        rm -rf "$cache/bookworm.tmp"
        echo "debian-chroot: debootstrap --variant=minbase bookworm (once, cached in $cache/bookworm)" >&2
        debootstrap --variant=minbase --cache-dir="$cache/archives" bookworm "$cache/bookworm.tmp" "$mirror" \
            >"$cache/debootstrap.log" 2>&1 || { tail -n 20 "$cache/debootstrap.log" >&2; die "debootstrap failed"; }
        # The security and updates suites, as a Debian 12 installer sets them up.
        cat >"$cache/bookworm.tmp/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${PYULOGD_DEBIAN_SECURITY:-http://deb.debian.org/debian-security} bookworm-security main
EOF
        touch "$cache/bookworm.tmp/.complete"
        mv "$cache/bookworm.tmp" "$cache/bookworm"
    fi
    flock -u 9
}

make_base
[ "$cmd" = base ] && { echo "$cache/bookworm"; exit 0; }

case $cmd in
    demo) script='cd /root/pyulogd && scripts/install.sh && examples/demo.sh' ;;
    run) [ $# -ge 1 ] || die "run needs a command"; script=$1 ;;
    *) die "unknown subcommand $cmd" ;;
esac

run=$(mktemp -d "$cache/run.XXXXXX")
chmod 0755 "$run"
mkdir -p "$run/upper" "$run/work" "$run/root"
# The downloaded .debs, hard-linked into this run's own apt cache (same file system, no
# copy) rather than shared: apt locks its cache, and runs may go on side by side. What the
# run downloads is linked back into the cache afterwards.
mkdir -p "$run/upper/var/cache/apt/archives"
find "$cache/archives" -maxdepth 1 -name '*.deb' -exec ln -t "$run/upper/var/cache/apt/archives/" {} + 2>/dev/null || true
if [ "$clone" = 1 ]; then
    # A fresh clone of what is committed (what a user would clone), not the work tree.
    git clone -q --no-hardlinks "$here" "$run/clone"
fi
if [ ${#with[@]} -gt 0 ]; then
    mkdir -p "$run/in"
    cp -- "${with[@]}" "$run/in/"
fi
cleanup() {
    find "$run/upper/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -links 1 \
        -exec ln -t "$cache/archives/" {} + 2>/dev/null || true
    if [ "$keep" = 1 ]; then
        echo "debian-chroot: kept $run/upper" >&2
    else
        rm -rf "$run"
    fi
}
trap cleanup EXIT

# The inner part runs in the private mount namespace; its arguments carry every path.
rc=0
unshare --mount --propagation private -- bash -euo pipefail -c '
base=$1 run=$2 archives=$3 script=$4 shared=$5
root=$run/root
mount -t overlay overlay -o "lowerdir=$base,upperdir=$run/upper,workdir=$run/work" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# The machine'"'"'s own trust for outside connections (where it reaches PyPI through a proxy
# with a CA of its own), as resolv.conf: pip inside uses it through PIP_CERT.
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl-host-ca.crt" 2>/dev/null || true
if [ -d "$run/clone" ]; then mkdir -p "$root/root/pyulogd"; mount --bind "$run/clone" "$root/root/pyulogd"; fi
if [ -d "$run/in" ]; then mkdir -p "$root/root/in"; mount --bind "$run/in" "$root/root/in"; fi
if [ -n "$shared" ]; then
    mkdir -p "$root/root/shared"; mount --bind "$shared" "$root/root/shared"
    mount -o remount,bind,ro "$root/root/shared"
fi
# Services must not start inside (policy-rc.d), as in any chroot.
printf "#!/bin/sh\nexit 101\n" > "$root/usr/sbin/policy-rc.d"; chmod 0755 "$root/usr/sbin/policy-rc.d"
exec chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    $( [ -s /etc/ssl/certs/ca-certificates.crt ] && echo PIP_CERT=/etc/ssl-host-ca.crt ) \
    /bin/bash -euo pipefail -c "$script"
' inner "$cache/bookworm" "$run" "$cache/archives" "$script" "$shared" || rc=$?
exit $rc
