"""Expected failures, each with its documented exit code (see README "Exit codes").

An expected failure is reported as one line without a traceback; anything else is a bug and
exits with INTERNAL_ERROR and a traceback in the log.
"""

from __future__ import annotations


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first line of an exception's message (psycopg2 adds lines of context and hints), else
    `default`, else the exception's type name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else (default or type(exc).__name__)


class ExitCode:
    OK = 0
    INTERNAL_ERROR = 1
    CONFIG_ERROR = 2
    DATABASE_UNAVAILABLE = 3
    BAD_INPUT = 4
    QUALITY_GATE_FAILED = 5
    ALREADY_RUNNING = 6
    INTERRUPTED = 130


class PipelineError(Exception):
    """Base of expected failures; carries the stage and table it is about when known."""

    exit_code = ExitCode.INTERNAL_ERROR

    def __init__(self, message: str, *, stage: str | None = None, table: str | None = None):
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.table = table

    def __str__(self) -> str:
        return self.message


class ConfigError(PipelineError):
    """A setting or flag is missing or invalid."""

    exit_code = ExitCode.CONFIG_ERROR


class DatabaseUnavailable(PipelineError):
    """The database cannot be reached or the embedded server cannot start."""

    exit_code = ExitCode.DATABASE_UNAVAILABLE


class BadInputError(PipelineError):
    """A source file breaks the contract (header, encoding, quoting, field count …)."""

    exit_code = ExitCode.BAD_INPUT


class QualityGateFailed(PipelineError):
    """A data-quality check of severity error failed."""

    exit_code = ExitCode.QUALITY_GATE_FAILED


class AlreadyRunning(PipelineError):
    """Another pipeline run holds the lock on this database."""

    exit_code = ExitCode.ALREADY_RUNNING
