#!/bin/bash
# Build the Debian package pyulogd_VERSION_all.deb with Debian's own tools, then lintian.
#
#   scripts/build-deb.sh [OUTDIR]      (default: dist/ of the repository)
#
# The build runs in a copy of the tree (tracked files and new ones not ignored, so work in
# progress is built too) under a temporary directory: dpkg-buildpackage writes its results
# beside the source directory, which must not be the repository's parent. Needs the
# `package` group of scripts/install-deps.sh (installed if missing, as root). Prints the
# path of the .deb on its last line. LINTIAN=0 skips lintian.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$here/dist}")
if [ "$(id -u)" = 0 ]; then
    "$here/scripts/install-deps.sh" package >&2
fi
version=$(dpkg-parsechangelog -l "$here/debian/changelog" -S Version)
tmp=$(mktemp -d /tmp/pyulogd-deb.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
src=$tmp/pyulogd-$version
mkdir "$src"
(cd "$here" && git ls-files -z -co --exclude-standard | tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$src"
# Files deleted in the work tree but still tracked are listed without existing: tar warns;
# what is there is what gets built.
# Debian's Python and tools, whatever comes first on the caller's PATH (pyenv, a venv).
(cd "$src" && env PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH= dpkg-buildpackage -b -us -uc >"$tmp/build.log" 2>&1) || {
    tail -n 40 "$tmp/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed (log above)" >&2
    exit 1
}
deb=$tmp/pyulogd_${version}_all.deb
[ -f "$deb" ] || { echo "build-deb: no $deb" >&2; exit 1; }
if [ "${LINTIAN:-1}" != 0 ]; then
    # Every tag that is left is explained in debian/README.source and overridden with a reason.
    PATH=/usr/sbin:/usr/bin:/sbin:/bin lintian --fail-on error,warning --display-info "$tmp"/pyulogd_"${version}"_*.changes >&2
fi
mkdir -p "$out"
cp "$deb" "$out/"
echo "$out/$(basename "$deb")"
