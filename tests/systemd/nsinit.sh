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
# Every step below is from docs/systemd-sandbox (the shared recipe); the
# comments say what goes wrong without it.
set -eu

INST=$1
ID=$2
shift 2

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
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/dbus /run/log
mount --bind "$INST/dbus" /run/dbus
mount --bind "$INST/log" /run/log
mount --bind "$INST/etc-systemd-system" /etc/systemd/system
# Storage=volatile ReadKMsg=no RateLimitBurst=0 (else the host's kmsg floods in)
mount --bind "$INST/journald.conf" /etc/systemd/journald.conf
# DefaultTimeoutStopSec=3s (else poweroff can wait 90 s)
mount --bind "$INST/system.conf" /etc/systemd/system.conf

# 3. Park the paths to re-bind (INST itself is among them: the notify socket
#    lives there) before /tmp and /var/tmp are covered, then move them back.
i=0
for p in "$@"; do
    mkdir -p "/run/kissbot-binds/$i"
    if [ -d "$p" ]; then
        mkdir "/run/kissbot-binds/$i/m"
    else
        : > "/run/kissbot-binds/$i/m"
    fi
    mount --bind "$p" "/run/kissbot-binds/$i/m"
    i=$((i + 1))
done

mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
# The recipe also puts a tmpfs on /var/log/journal; where the host has no such
# dir, creating one would change the host (and Storage=volatile never uses it).
if [ -d /var/log/journal ]; then
    mount -t tmpfs -o mode=0755 tmpfs /var/log/journal
fi

i=0
for p in "$@"; do
    if [ -d "/run/kissbot-binds/$i/m" ]; then
        mkdir -p "$p"
    else
        mkdir -p "$(dirname "$p")"
        [ -e "$p" ] || : > "$p"
    fi
    mount --move "/run/kissbot-binds/$i/m" "$p"
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
mount --make-rshared /

export container=kissbot-test
exec /lib/systemd/systemd --system --unit=basic.target --log-target=journal --show-status=no
