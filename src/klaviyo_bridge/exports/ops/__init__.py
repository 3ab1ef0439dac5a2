"""Export operations, one class each; ``operation_for(settings)`` picks the one the settings ask for.

Adding an operation: a module here with an ``Operation`` subclass (endpoint, columns, ``prepare``,
``envelope``, and ``presend`` / ``confirm`` where it writes consent), a line in ``operation_for``,
and its name in ``settings.OPERATIONS``. The runner needs no change.
"""

from __future__ import annotations

from ..settings import ExportSettings
from .add import AddToList
from .base import BatchContext, Operation, Outcomes, Prepared, RunContext
from .consent import Subscribe, Unsubscribe, UnsubscribeFromList
from .events import TrackEvents
from .mirror import Mirror, MirrorRemove
from .remove import RemoveFromList
from .upsert import Upsert

__all__ = [
    "AddToList",
    "BatchContext",
    "Operation",
    "Outcomes",
    "Mirror",
    "MirrorRemove",
    "Prepared",
    "RemoveFromList",
    "RunContext",
    "Subscribe",
    "TrackEvents",
    "Unsubscribe",
    "UnsubscribeFromList",
    "Upsert",
    "operation_for",
]


def operation_for(settings: ExportSettings) -> Operation:
    if settings.operation == "add":
        return AddToList(settings)
    if settings.operation == "remove_profiles":
        return RemoveFromList(settings)
    if settings.operation == "mirror":
        return Mirror(settings)
    if settings.operation == "upsert":
        return Upsert(settings)
    if settings.operation == "track_events":
        return TrackEvents(settings)
    if settings.consent_type == "subscribed":
        return Subscribe(settings)
    return UnsubscribeFromList(settings) if settings.list_value else Unsubscribe(settings)
