"""The pure core: every decision, no I/O.

``machine`` is the supervision state machine (events in, actions out, time as
an argument); ``commands`` turns its notes into the outcome an operator's
command waits for; ``records`` is the value-class helper every layer uses.
The machine's names are this package's public surface (``core.Exited``,
``core.Core``), so callers need not know which module holds them.
"""

from ..kissbot.names import HUB
from .machine import (
    CLEAN_SIGNALS,
    WATCHDOG_FAULT,
    Action,
    Adopted,
    Batch,
    Core,
    Event,
    Exited,
    Finished,
    Gate,
    Gates,
    Hold,
    Kill,
    Note,
    Phase,
    Policy,
    Proc,
    ProcessSpec,
    ProcessStatus,
    Ready,
    Release,
    Reload,
    Restart,
    Shutdown,
    Spawn,
    Spawned,
    SpawnFailed,
    Stalled,
    Start,
    StatusText,
    Stop,
    Stopping,
    Tick,
    Waiting,
    WatchdogPing,
    describe_exit,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .machine import ReadyMode, StopCause

__all__ = [
    "CLEAN_SIGNALS",
    "HUB",
    "WATCHDOG_FAULT",
    "Action",
    "Adopted",
    "Batch",
    "Core",
    "Event",
    "Exited",
    "Finished",
    "Gate",
    "Gates",
    "Hold",
    "Kill",
    "Note",
    "Phase",
    "Policy",
    "Proc",
    "ProcessSpec",
    "ProcessStatus",
    "Ready",
    "ReadyMode",
    "Release",
    "Reload",
    "Restart",
    "Shutdown",
    "Spawn",
    "SpawnFailed",
    "Spawned",
    "Stalled",
    "Start",
    "StatusText",
    "Stop",
    "StopCause",
    "Stopping",
    "Tick",
    "Waiting",
    "WatchdogPing",
    "describe_exit",
]
