"""Skipping the log lines that structlog's configuration would drop, before building them.

Binding a structlog logger (or calling a method on the lazy proxy ``structlog.get_logger()``
returns) assembles a bound logger each time; on the command path that costs more than the
line itself when the level is filtered out, as it usually is for ``debug`` and often for
``info``.
"""

from __future__ import annotations

import logging

import structlog

__all__ = ["enabled"]

#: What a filtering bound logger (``structlog.make_filtering_bound_logger``) has for each method
#: below its level: one shared function that does nothing.
_DROPPED = structlog.make_filtering_bound_logger(logging.CRITICAL).debug


def enabled(method: str) -> bool:
    """Whether ``logger.<method>(...)`` on our module loggers may log anything now.

    ``False`` only when the configured wrapper class makes that method structlog's no-op (a
    filtering bound logger configured above that level), so skipping the call changes nothing.
    """
    return getattr(structlog.get_config()["wrapper_class"], method, None) is not _DROPPED
