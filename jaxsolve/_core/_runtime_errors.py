"""What a user sees when a check raises inside compiled code.

A run-time check (``equinox.error_if``, behind every ``throw=True``) raises from a host callback.
Besides the exception itself, JAX logs the callback's whole traceback ("jax.pure_callback failed",
about 17 lines through JAX's and Equinox's internals) *before* the exception reaches the user, so
the message that says what went wrong comes last, after a wall of frames. That log adds nothing:
the same exception, with its message, is raised right after it. :func:`quiet_check_logs` drops
exactly those records — callback failures whose exception is Equinox's run-time error — and keeps
every other callback failure (a user's own ``pure_callback`` that crashes still logs).
"""

from __future__ import annotations

import logging

_CALLBACK_LOGGERS = ("jax._src.callback", "jax._src.debugging")
_CHECK_ERRORS = ("_EquinoxRuntimeError", "EquinoxRuntimeError")


class _DropCheckFailures(logging.Filter):
    """Drop the traceback log of a host callback that raised a run-time check's error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or type(exc).__name__ not in _CHECK_ERRORS


_FILTER = _DropCheckFailures()


def quiet_check_logs() -> None:
    """Install the filter (idempotent)."""
    for name in _CALLBACK_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
