"""Signed operator commands, and the state they build (agent registry and more).

- :mod:`processors.control.commands` -- the signing payload (:func:`sign_command`,
  :func:`command_signing_message`), the kinds and their subjects (:func:`subject_for`),
  and the parsing of command payloads;
- :mod:`processors.control.state` -- :class:`ControlState`, which verifies commands and
  applies them;
- :mod:`processors.control.registry` -- the agent records the decision layers read.
"""

from __future__ import annotations

from processors.control.commands import (
    BUILTIN_KINDS,
    CONTROL_PAYLOAD_TYPE,
    ControlCommandError,
    ControlContext,
    ControlHandler,
    ControlResult,
    SubjectRule,
    command_signing_message,
    sign_command,
    subject_for,
)
from processors.control.state import ControlState

__all__ = [
    "CONTROL_PAYLOAD_TYPE",
    "BUILTIN_KINDS",
    "ControlCommandError",
    "ControlContext",
    "ControlHandler",
    "ControlResult",
    "ControlState",
    "SubjectRule",
    "command_signing_message",
    "sign_command",
    "subject_for",
]
