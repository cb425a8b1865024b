"""systemd's own exit statuses, in words (systemd.exec(5), "Process exit codes").

A unit whose process could not be set up never ran the program: systemd exits
the forked child with one of these (``203/EXEC``, ``226/NAMESPACE``, ...). Said
as "exited 203", the operator looks for a bug in the bot; said as what systemd
could not do, they look at the unit's setup (a path, a user, a credential).
"""

from __future__ import annotations

# status: (systemd's name, what could not be done). Only those a transient
# unit of ours can meet, and the common ones; others are said by number.
SETUP_FAILURES: dict[int, tuple[str, str]] = {
    200: ("CHDIR", "could not change to the working directory (the workdir)"),
    203: ("EXEC", "could not execute the program (missing, not executable, or a bad #! line)"),
    204: ("MEMORY", "ran out of memory while setting up the process"),
    205: ("LIMITS", "could not set the resource limits"),
    206: ("OOM_ADJUST", "could not set the OOM score adjustment"),
    208: ("STDIN", "could not set up standard input"),
    209: ("STDOUT", "could not set up standard output (the journal)"),
    216: ("GROUP", "could not switch to the group (systemd.group: does it exist?)"),
    217: ("USER", "could not switch to the user (systemd.user: does it exist?)"),
    218: ("CAPABILITIES", "could not set the capabilities"),
    219: ("CGROUP", "could not set up the control group"),
    220: ("SETSID", "could not start a session"),
    222: ("STDERR", "could not set up standard error (the journal)"),
    225: ("NETWORK", "could not set up the network namespace"),
    226: (
        "NAMESPACE",
        "could not set up the file system namespace (a path it must see or write, "
        "such as the workdir, is missing)",
    ),
    227: ("NO_NEW_PRIVILEGES", "could not set no-new-privileges"),
    228: ("SECCOMP", "could not set up the system call filter"),
    230: ("PERSONALITY", "could not set the execution domain"),
    232: ("ADDRESS_FAMILIES", "could not restrict the address families"),
    233: ("RUNTIME_DIRECTORY", "could not create the runtime directory"),
    235: ("CHOWN", "could not change the owner of its standard output"),
    237: ("KEYRING", "could not set up the kernel keyring"),
    243: (
        "CREDENTIALS",
        "could not load its credentials (the token file is missing or unreadable)",
    ),
}


def setup_failure(status: int) -> str | None:
    """``203/EXEC: systemd could not execute the program ...``, or None when
    ``status`` is the program's own exit status."""
    known = SETUP_FAILURES.get(status)
    if known is None:
        return None
    name, what = known
    return f"{status}/{name}: the unit was not set up, systemd {what}"
