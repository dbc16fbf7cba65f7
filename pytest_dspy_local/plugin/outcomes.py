"""The one place where the plugin's errors become pytest outcomes.

- ``UsageError`` (and an unwritable report) stops the run: ``pytest.UsageError``, exit code 4.
- ``PromptFailure`` fails its item with the readable report from report/terminal.py.
- Any other ``DspyLocalError`` errors or fails its item with its one-line message.
- Anything else is a bug or the user's own code: pytest's usual traceback.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest

from pytest_dspy_local.errors import DspyLocalError, PromptFailure, UsageError


@contextmanager
def stopping_on_usage_errors() -> Iterator[None]:
    """Turn a ``UsageError`` raised in the block into pytest's (one line, exit code 4)."""
    try:
        yield
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


# What to do about a file that cannot be written, by errno; anything else: fix the path.
WRITE_FIXES = {
    errno.ENOSPC: "free disk space and run again",
    errno.EDQUOT: "free disk space (the disk quota is full) and run again",
    errno.EACCES: "make it writable and run again",
    errno.EPERM: "make it writable (chmod u+w; chattr -i if it is immutable) and run again",
    errno.EROFS: "it is on a read-only file system: write it elsewhere or remount that writable",
}


@contextmanager
def stopping_on_write_errors() -> Iterator[None]:
    """A report or snapshot that cannot be written stops the run naming the file."""
    try:
        yield
    except OSError as exc:
        fix = WRITE_FIXES.get(exc.errno or 0, "fix the path")
        raise pytest.UsageError(f"dspy-local: cannot write {exc.filename} ({exc.strerror}); {fix}") from None


def failure_text(error: BaseException) -> str | None:
    """What an item shows for one of the plugin's errors, or None for pytest's own report."""
    if isinstance(error, PromptFailure):
        from pytest_dspy_local.report.terminal import failure_lines

        return "\n".join(failure_lines(error.result))
    if isinstance(error, DspyLocalError):
        return str(error)
    return None


def fail_test(error: DspyLocalError) -> NoReturn:
    """Fail the running test (a fixture's) with the error's one line, no traceback."""
    pytest.fail(str(error), pytrace=False)
