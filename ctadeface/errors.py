"""Errors that end a run or a scan, each with its BIDS-Apps (BEP027) exit code.

Every error carries one human-readable line: the file (or argument) and what is wrong.
``cli.py`` prints ``str(err)`` and exits with ``err.exit_code``; no other module prints or exits.
"""

from __future__ import annotations

import argparse

#: Exit codes of the BIDS execution spec (BEP027), after BSD ``sysexits.h``.
EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 64
EXIT_DATAERR = 65
EXIT_NOINPUT = 66
EXIT_CANTCREAT = 73
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class CTADefaceError(Exception):
    """Base class: a one-line message and the exit code it maps to."""

    exit_code: int = EXIT_SOME_FAILED


class UsageError(CTADefaceError):
    """A bad command-line argument or option (exit 64)."""

    exit_code = EXIT_USAGE


class InputError(CTADefaceError):
    """An input file that cannot be read or is not a usable CT image (exit 65 when all fail)."""

    exit_code = EXIT_DATAERR


class NoInputError(CTADefaceError):
    """Nothing matched: no CT image, or none of the asked participants (exit 66)."""

    exit_code = EXIT_NOINPUT


class OutputError(CTADefaceError):
    """The output cannot be created or written (exit 73)."""

    exit_code = EXIT_CANTCREAT


class ModelError(UsageError):
    """A model that is unknown, missing, incomplete or fails its checksum (exit 64)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 64) instead of printing usage and exiting with 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see --help)")
