"""The native backend: fork/exec, pidfds and the sd_notify server.

``backend`` carries out the actions; ``spawner`` is the one place a process
is started; ``notifyserver`` serves sd_notify the way systemd does;
``logfiles`` writes each process's output to rotated log files.
"""
