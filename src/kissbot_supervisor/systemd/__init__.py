"""The systemd side of the supervisor, in layers that do no I/O.

* :mod:`.units`: unit names and the property lists of the transient units
  (``kissbot-hub.service``, ``kissbot-bot@CHANNEL.service`` in ``kissbot.slice``);
* :mod:`.manager`: ``org.freedesktop.systemd1.Manager`` calls as jeepney messages,
  match rules, and parsers of replies and signals into plain values;
* :mod:`.export`: static unit files equivalent to the transient units, for running
  without a resident supervisor (exclusive with it).

The backend that sends the messages and reads the bus lives apart; nothing here
opens a socket, so every module is checked by unit tests with hand-built messages.
This file imports nothing: importing one module does not load the others (or jeepney).
"""
