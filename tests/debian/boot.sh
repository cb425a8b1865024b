#!/bin/sh
# Boots the Debian root filesystem ROOT in a container of its own (systemd-nspawn),
# as ../shared/debian-nspawn.md describes: cgroups of its own (so --keep-unit does
# not use the host's root cgroup), a private mount namespace with a tmpfs /run
# (nspawn writes /run/systemd/nspawn there), and the container booted again when
# it reboots (nspawn exits 133). Nothing is left on the host but the cgroup
# directories, which machine.py removes once the container is down.
#
#   boot.sh ROOT ID [CGROUP_DIR...]
set -eu
root=$1
id=$2
shift 2
for dir in "$@"; do
    mkdir -p "$dir"
    echo $$ > "$dir/cgroup.procs"
done
exec unshare --mount --propagation private -- sh -c '
    mount -n -t tmpfs -o mode=0755 tmpfs /run
    while :; do
        rc=0
        systemd-nspawn -b -D "$1" -M "kb$2" --register=no --keep-unit --console=read-only \
            || rc=$?
        [ "$rc" -eq 133 ] || exit "$rc"
    done' boot "$root" "$id"
