"""Signed operator commands, and the state they build (agent registry and more).

- :mod:`processors.control.commands` -- the signing payload (:func:`sign_command`,
  :func:`command_signing_message`, :class:`ChainLink`), the kinds and their subjects
  (:func:`subject_for`), and the parsing of command payloads;
- :mod:`processors.control.history` -- the control log's integrity: which records are
  authentic commands in their place, per-signer histories, what breaks them
  (:class:`ControlHistoryError`);
- :mod:`processors.control.state` -- :class:`ControlState`, which verifies commands and
  applies them;
- :mod:`processors.control.operators` -- operator keys enrolled and retired by root keys
  (``operator.enroll``, ``operator.retire``: :class:`EnrolledOperators`);
- :mod:`processors.control.registry` -- the agent records the decision layers read.
"""

from __future__ import annotations

from processors.control.commands import (
    BUILTIN_KINDS,
    CONTROL_PAYLOAD_TYPE,
    ChainLink,
    ControlCommandError,
    ControlContext,
    ControlHandler,
    ControlResult,
    SubjectRule,
    command_digest,
    command_signing_message,
    sign_command,
    subject_for,
)
from processors.control.history import (
    LOG_APPEND_TIME,
    ControlHistoryError,
    HistoryProblem,
    LogEntry,
    Signer,
)
from processors.control.operators import (
    ENROLL_KIND,
    RETIRE_KIND,
    EnrolledOperator,
    EnrolledOperators,
    OperatorKeyError,
    parse_operator_key,
)
from processors.control.state import ControlState

__all__ = [
    "CONTROL_PAYLOAD_TYPE",
    "BUILTIN_KINDS",
    "ENROLL_KIND",
    "RETIRE_KIND",
    "LOG_APPEND_TIME",
    "ChainLink",
    "ControlCommandError",
    "ControlContext",
    "ControlHandler",
    "ControlHistoryError",
    "ControlResult",
    "ControlState",
    "EnrolledOperator",
    "EnrolledOperators",
    "HistoryProblem",
    "LogEntry",
    "OperatorKeyError",
    "Signer",
    "SubjectRule",
    "command_digest",
    "command_signing_message",
    "parse_operator_key",
    "sign_command",
    "subject_for",
]
