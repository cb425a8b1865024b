"""What the supervisor shows the outside world: events, metrics and the ``on_failure`` hook.

The daemon hands every core Note to :meth:`Observer.on_note`, which streams it
as an EVENT to the control socket's subscribers (built only when there are
some) and runs the ``on_failure`` command for failures
(:data:`.events.HOOK_KINDS`). :meth:`Observer.metrics_text` answers the
``metrics`` command and ``GET /metrics``; the optional metrics log and HTTP
listener live here too, and :meth:`Observer.configure` applies their settings
at start and on every reload. The modules that do the work are imported only
when their setting is on, so an unconfigured supervisor pays for none of them.
"""

from __future__ import annotations

import os
import time

from ..runtime.fs import base_of
from .events import HOOK_KINDS, event_object, hook_environment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sized
    from typing import Any, Protocol

    from ..config.load import Config
    from ..core import Core
    from ..runtime.log import Log
    from ..runtime.loop import Loop
    from ..status import Status
    from ..tokens.gate import TokenGate
    from .hooks import HookRunner
    from .http import MetricsHttpServer
    from .metricslog import MetricsLog

    class EventSink(Protocol):
        """Where events go: the control socket's subscribers (daemon.control),
        named by what is used so that this layer does not import the daemon's."""

        @property
        def subscribers(self) -> Sized: ...

        def broadcast(self, message: dict[str, Any]) -> None: ...


class Observer:
    def __init__(
        self,
        loop: Loop,
        control: EventSink,
        core: Core,
        tokens: TokenGate,
        status: Callable[[], Status],
        log: Log,
        started_at: float,
        cfg: Config,
    ) -> None:
        self.loop = loop
        self.control = control
        self.core = core
        self.tokens = tokens
        self._status = status
        self._log = log
        self.started_at = started_at
        # PATH and LANG for the hook, read once: the rest of our environment never goes.
        self._inherited = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
        self._hooks: HookRunner | None = None
        self._metrics_log: MetricsLog | None = None
        self._http: MetricsHttpServer | None = None
        self.cfg = cfg
        self.configure(cfg)

    # -- settings ------------------------------------------------------------------

    def configure(self, cfg: Config) -> None:
        """Apply the metrics and hook settings (at start, and after each reload)."""
        self.cfg = cfg
        s = cfg.settings
        path = cfg.resolve(s.metrics_path) if s.metrics_path else None
        current = self._metrics_log
        if current is not None and (
            current.path != path or current.interval != s.metrics_interval_sec
        ):
            current.close()
            self._metrics_log = current = None
        if current is None and path is not None:
            from .metricslog import MetricsLog

            self._metrics_log = MetricsLog(
                self.loop,
                path,
                s.metrics_interval_sec,
                self.log_line,
                self._log,
                base_of(path, cfg.workdir),
            )
        if self._http is not None and self._http.listen != s.metrics_listen:
            self._http.close()
            self._http = None
        if self._http is None and s.metrics_listen is not None:
            from .http import MetricsHttpServer

            try:
                self._http = MetricsHttpServer(
                    self.loop, s.metrics_listen, self.metrics_text, self._log
                )
            except OSError as e:
                self._log.error(
                    "metrics",
                    f"cannot serve metrics on {s.metrics_listen} (supervisor.metrics.listen): "
                    f"{e.strerror or e}; `kissbotctl metrics` still works",
                )

    # -- notes ---------------------------------------------------------------------

    def on_note(self, name: str, kind: str, message: str) -> None:
        if self.control.subscribers:
            event = event_object(self.core, name, kind, message, time.time())
            self.control.broadcast({"event": event})
        argv = self.cfg.settings.on_failure
        if argv is not None and kind in HOOK_KINDS:
            if self._hooks is None:
                from .hooks import HookRunner

                self._hooks = HookRunner(self.loop, self._log)
            env = hook_environment(
                self.core, name, kind, message, self.cfg.workdir, self._inherited
            )
            self._hooks.run(
                argv, env, self.cfg.workdir, name, self.cfg.settings.on_failure_timeout_sec
            )

    # -- metrics -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        from ..runtime.procinfo import cpu_seconds
        from .metrics import snapshot

        extras = {
            name: {
                "cpu_seconds": cpu_seconds(p.pid),
                "watchdog_timeouts": p.watchdog_timeouts,
                "token_expiry": self.tokens.expiry(name),
            }
            for name, p in self.core.procs.items()
        }
        own = os.times()
        alike = self.core.failing_alike()
        return snapshot(
            self._status(),
            time=time.time(),
            start_time=self.started_at,
            supervisor_cpu=round(own.user + own.system, 3),
            extras=extras,
            failing_alike=0 if alike is None else alike[0],
        )

    def metrics_text(self) -> str:
        from .metrics import exposition

        return exposition(self.snapshot())

    def log_line(self) -> bytes:
        from .metrics import log_line

        return log_line(self.snapshot())

    def child_pids(self) -> set[int]:
        """The ``on_failure`` hooks running (see runtime/reaper.py)."""
        return self._hooks.pids() if self._hooks is not None else set()

    def close(self) -> None:
        if self._metrics_log is not None:
            self._metrics_log.close()
        if self._http is not None:
            self._http.close()
        if self._hooks is not None:
            self._hooks.close()
