#!/bin/sh
# PID 1 of a kissbot systemd sandbox: prepares the namespace, then execs systemd.
#
# Usage (run by SystemdSandbox.start() under `unshare --pid --fork --mount --uts
# --mount-proc --propagation private --kill-child=SIGKILL`):
#
#     nsinit.sh INST ID [BIND...]
#
# INST  the instance dir on the host (dbus/, log/, etc-systemd-system/,
#       journald.conf, system.conf; the notify socket)
# ID    the instance id: cgroups are named kissbot-ID in every hierarchy
# BIND  host paths re-bound at the same path inside after the tmpfs mounts
#       (paths under /tmp and /var/tmp are hidden by them otherwise)
#
# The steps are those of the shared recipe (systemd-sandbox.md), in its order
# where it matters, plus what is marked "Not in the recipe": without those, a
# boot left changes on the HOST. The comments say what goes wrong without each.
set -eu

INST=$1
ID=$2
shift 2
# The binary to exec (tests of the boot-failure path pass another one).
SYSTEMD=${KISSBOT_SANDBOX_SYSTEMD:-/lib/systemd/systemd}
unset KISSBOT_SANDBOX_SYSTEMD

# 1. Own cgroup in EVERY mounted hierarchy (else MemoryCurrent/TasksCurrent
#    read as 2^64-1), and move into it in the unified and name=systemd ones
#    (else systemd takes the host's root cgroup and two instances collide).
#    /proc is this namespace's own (--mount-proc); the mount table is a copy.
hierarchies=$(awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts)
for h in $hierarchies; do
    mkdir -p "$h/kissbot-$ID"
done
for h in $hierarchies; do
    case "$h" in
        */unified | */systemd) echo 0 > "$h/kissbot-$ID/cgroup.procs" ;;
    esac
done

# 2. A private /run, with the host-visible parts bound in from INST: the system
#    bus socket, the (volatile) journal, our unit dir (masks + test units).
#    (`mount -n` everywhere: util-linux would otherwise create /run/mount on
#    the HOST's /run for its utab lock before our tmpfs covers it.)
mount -n -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/dbus /run/log
mount -n --bind "$INST/dbus" /run/dbus
mount -n --bind "$INST/log" /run/log
mount -n --bind "$INST/etc-systemd-system" /etc/systemd/system
# Storage=volatile ReadKMsg=no RateLimitBurst=0 (else the host's kmsg floods in)
mount -n --bind "$INST/journald.conf" /etc/systemd/journald.conf
# DefaultTimeoutStopSec=3s (else poweroff can wait 90 s)
mount -n --bind "$INST/system.conf" /etc/systemd/system.conf

# Not in the recipe: /sys/fs/cgroup and /dev are filesystems shared with the
# host, and systemd writes into them (mount points for the controllers it finds
# unmounted: hugetlb, perf_event, net_cls,net_prio, cpu,cpuacct; the /dev/log
# symlink of systemd-journald-dev-log.socket). Those would stay on the HOST.
# So: a private tmpfs on /sys/fs/cgroup and an overlay on /dev (device nodes
# still work through it; new files land in a tmpfs), each with the mounts that
# were below it moved back. Anything systemd writes to /dev/console lands in
# INST/console.log instead of the host's console.
#
# cover DIR MOUNT-ARGS...: mount a new filesystem on DIR, keep DIR's submounts.
cover() {
    dir=$1
    shift
    subs=$(awk -v d="$dir/" 'index($2, d) == 1 && index(substr($2, length(d) + 1), "/") == 0 { print $2 }' /proc/self/mounts | sort -u)
    n=0
    for s in $subs; do
        mkdir -p "/run/kissbot-stage/$n"
        mount -n --move "$s" "/run/kissbot-stage/$n"
        n=$((n + 1))
    done
    mount -n "$@" "$dir"
    n=0
    for s in $subs; do
        mkdir -p "$s"
        mount -n --move "/run/kissbot-stage/$n" "$s"
        rmdir "/run/kissbot-stage/$n"
        n=$((n + 1))
    done
    [ -z "$subs" ] || rmdir /run/kissbot-stage
}
cover /sys/fs/cgroup -t tmpfs -o mode=0755 tmpfs
mkdir -p /run/kissbot-dev/upper /run/kissbot-dev/work
cover /dev -t overlay -o lowerdir=/dev,upperdir=/run/kissbot-dev/upper,workdir=/run/kissbot-dev/work overlay
mount -n --bind "$INST/console.log" /dev/console

# 3. Private /tmp, /var/tmp, /var/log/journal. The paths to re-bind are parked
#    before and moved back after (INST itself is among them: the notify socket
#    is there, and INST is under /tmp).
i=0
for p in "$@"; do
    mkdir -p "/run/kissbot-binds/$i"
    if [ -d "$p" ]; then
        mkdir "/run/kissbot-binds/$i/m"
    else
        : > "/run/kissbot-binds/$i/m"
    fi
    mount -n --bind "$p" "/run/kissbot-binds/$i/m"
    i=$((i + 1))
done

mount -n -t tmpfs -o mode=1777 tmpfs /tmp
mount -n -t tmpfs -o mode=1777 tmpfs /var/tmp
# The recipe also puts a tmpfs on /var/log/journal; where the host has no such
# dir, creating one would change the host (and Storage=volatile never uses it).
if [ -d /var/log/journal ]; then
    mount -n -t tmpfs -o mode=0755 tmpfs /var/log/journal
fi

i=0
for p in "$@"; do
    if [ -d "/run/kissbot-binds/$i/m" ]; then
        mkdir -p "$p"
    else
        mkdir -p "$(dirname "$p")"
        [ -e "$p" ] || : > "$p"
    fi
    mount -n --move "/run/kissbot-binds/$i/m" "$p"
    i=$((i + 1))
done
# Remove the now empty placeholders one by one: never `rm -r` near a mount point.
i=0
for p in "$@"; do
    rmdir "/run/kissbot-binds/$i/m" 2>/dev/null || rm -f "/run/kissbot-binds/$i/m"
    rmdir "/run/kissbot-binds/$i"
    i=$((i + 1))
done
[ $# -eq 0 ] || rmdir /run/kissbot-binds

# 4. Shared propagation (without it LoadCredential/SetCredential silently give
#    an empty $CREDENTIALS_DIRECTORY).
mount -n --make-rshared /

export container=kissbot-test
exec "$SYSTEMD" --system --unit=basic.target --log-target=journal --show-status=no
