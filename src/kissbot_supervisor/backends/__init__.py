"""The backends carry out the core's actions and turn the world into core events.

``native`` forks and execs the processes itself; ``systemd`` runs them as
transient units. Neither decides anything: that is the core's job.
"""
