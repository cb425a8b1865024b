"""Tests against a real systemd system manager booted in a namespace (see sandbox.py)."""
