"""What every long-running part stands on.

``loop`` is the event loop (file descriptors, timers, signals); ``inotify``
tells when a file changes; ``procinfo`` reads /proc; ``selfnotify`` is the
supervisor's own sd_notify to systemd.
"""
