"""Errors the user can fix, and the one-line report of every known failure.

Front ends (the `mlm` command, the KFP components) print a known failure as one line naming the
file or host and the fix, and exit with status 2: `UserInputError`, input that is not UTF-8, a
truncated or corrupt TFRecord, an unreachable server, a job the cluster refuses to create.
Anything else is a bug: its traceback is printed, followed by a line saying where to report it.
`--debug` (or `MLM_DEBUG=1`) prints the traceback of known failures too.

This module imports nothing heavy: the classes of other libraries are recognised by name.
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import sys
import traceback

# The exit status of a known failure (the same as a usage error from argparse).
USER_ERROR_EXIT = 2
# Set (to "1") by `mlm --debug`; inherited by the worker processes a launcher starts.
DEBUG_ENV = "MLM_DEBUG"
BUG_REPORT = (
    "this is a bug in mlm: please report it as an issue of the mlm project with the command "
    "line and the traceback above"
)
# Errors of other modules whose message is already one line naming the cause and the fix.
_ONE_LINE_ERRORS = {"mlm.launch.job_errors.JobLaunchError"}
# Failures that are not bugs and whose message says what happened (it may quote a log tail):
# printed without a traceback, status 1.
_FAILURES = {
    "mlm.launch.local.WorkersFailedError",
    "mlm.launch.job_errors.JobFailedError",
    "mlm.launch.job_errors.JobCancelledError",
    "mlm.launch.job_errors.JobTimeoutError",
    "mlm.training.loop.TrainingDivergedError",
}
_CONNECTION_ERRORS = {
    "urllib3.exceptions.MaxRetryError",
    "urllib3.exceptions.NewConnectionError",
    "requests.exceptions.ConnectionError",
}


# File-system errors that the user fixes (space, permissions, a file in the way), with the fix.
# Anywhere they happen, they are one line naming the path.
_OS_FIXES = {
    errno.ENOSPC: "free space there or write somewhere else",
    errno.EDQUOT: "free space within the quota or write somewhere else",
    errno.EROFS: "write somewhere else (in a container: a mounted volume)",
    errno.EACCES: "fix the permissions or use another path",
    errno.EPERM: "fix the permissions or use another path",
    errno.EEXIST: "a file is in the way: remove it or use another path",
    errno.ENOTDIR: "a part of the path is a file, not a directory: use another path",
    errno.EISDIR: "it is a directory: give a file",
    errno.ENAMETOOLONG: "use a shorter path",
}
# The same errors as TensorFlow's C++ file system reports them (inside a DataLossError,
# ResourceExhaustedError, ... message): "<path>; No space left on device".
_OS_ERROR_TEXT = re.compile(
    r"([^\s;{}'\"]+)['\"]?[;:,]?\s*(No space left on device|Read-only file system|"
    r"Disk quota exceeded|Permission denied)"
)
# A `UserInputError` raised in Python code that TensorFlow ran (a `tf.py_function` in an input
# pipeline) reaches the caller inside a TensorFlow error, with the Python traceback as text.
_WRAPPED_USER_ERROR = re.compile(r"UserInputError: ([^\n]+)")
_OS_ERROR_CODES = {
    "No space left on device": errno.ENOSPC,
    "Read-only file system": errno.EROFS,
    "Disk quota exceeded": errno.EDQUOT,
    "Permission denied": errno.EACCES,
}


class UserInputError(ValueError):
    """Bad input from the user (a file, a parameter, a config).

    The message names the offending file or parameter and says how to fix it.
    """


def _qualified_names(error: BaseException) -> set[str]:
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(error).__mro__}


def _is_tensorflow_error(names: set[str]) -> bool:
    return any(name.startswith("tensorflow.") for name in names)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _host_of(error: BaseException) -> str:
    """The host a connection error was about, when the error says."""
    pool = getattr(error, "pool", None)
    if pool is not None and getattr(pool, "host", None):
        return f"{pool.host}:{pool.port}" if getattr(pool, "port", None) else pool.host
    request = getattr(error, "request", None)
    url = getattr(request, "url", None) or getattr(error, "url", None)
    return str(url) if url else "the server"


def _connection_detail(error: BaseException) -> str:
    """The innermost reason of a connection error (`[Errno 111] Connection refused`)."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "reason", None)
        if not isinstance(inner, BaseException) and error.args:
            inner = error.args[0]
        if not isinstance(inner, BaseException):
            break
        error = inner
    text = _first_line(str(error))
    return text[text.find("[Errno") :] if "[Errno" in text else text[:200]


def _worker_error_line(error: BaseException) -> str:
    """`worker N: <its one-line error>` when a local worker ended with a known failure."""
    tail = getattr(error, "tail", None) or [""]
    command, separator, message = tail[-1].partition(": error: ")
    if getattr(error, "returncode", None) != USER_ERROR_EXIT or not separator:
        return ""
    if not command.startswith("mlm "):
        return ""
    return f"worker {getattr(error, 'worker', '?')}: {message}"


def user_message(error: BaseException) -> str | None:
    """The one-line message for a known failure, or None when `error` is a bug.

    Known failures: `UserInputError` (its message, also when TensorFlow ran the code that
    raised it and wraps it in one of its errors), bytes that are not UTF-8, a truncated or
    corrupt TFRecord (TensorFlow's `DataLossError`), a server that cannot be reached, the
    launcher's one-line job errors, and a local worker that ended with one of these (its line).
    """
    names = _qualified_names(error)
    worker_line = (
        _worker_error_line(error) if "mlm.launch.local.WorkersFailedError" in names else ""
    )
    if isinstance(error, UserInputError) or names & _ONE_LINE_ERRORS:
        message = str(error)
    elif worker_line:
        message = worker_line
    elif isinstance(error, UnicodeDecodeError):
        message = (
            f"input is not UTF-8 text ({error.reason} at byte offset {error.start}); re-encode "
            "the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        )
    elif _is_tensorflow_error(names) and _WRAPPED_USER_ERROR.search(str(error)):
        message = _WRAPPED_USER_ERROR.findall(str(error))[-1]  # the innermost: raised first
    elif "tensorflow.python.framework.errors_impl.DataLossError" in names:
        detail = _first_line(getattr(error, "message", "") or str(error))
        message = (
            f"a TFRecord shard is truncated or corrupt ({detail}); write the shards again with "
            "`mlm shard`"
        )
    elif isinstance(error, OSError) and error.errno in _OS_FIXES and error.filename:
        message = f"cannot use {error.filename}: {error.strerror}; {_OS_FIXES[error.errno]}"
    elif _is_tensorflow_error(names) and _OS_ERROR_TEXT.search(str(error)):
        match = _OS_ERROR_TEXT.search(str(error))
        assert match is not None
        path, text = match.groups()
        message = f"cannot write {path}: {text}; {_OS_FIXES[_OS_ERROR_CODES[text]]}"
    elif names & _CONNECTION_ERRORS or isinstance(error, ConnectionRefusedError):
        message = (
            f"cannot reach {_host_of(error)} ({_connection_detail(error)}); check the URL "
            "and that the server is running and reachable from here"
        )
    else:
        return None
    return " ".join(message.split("\n"))


def report(error: BaseException, command: str, *, debug: bool | None = None) -> int:
    """Prints `error` to stderr the way front ends do, and returns the exit status.

    A known failure is one line `mlm COMMAND: error: ...` (after its traceback with `debug`),
    status 2; a failed job or worker, or diverged training, prints its message (which may quote
    a log tail), status 1; a bug prints its traceback and where to report it, status 1.

    Args:
        error: the exception that ended the command.
        command: the subcommand or component name, for the message.
        debug: print tracebacks of known failures too (default: `MLM_DEBUG` is set).
    """
    if debug is None:
        debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    message = user_message(error)
    failure = message is None and bool(_qualified_names(error) & _FAILURES)
    if (message is None and not failure) or debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    if failure:
        print(f"mlm {command}: error: {error}", file=sys.stderr)
        return 1
    if message is None:
        print(f"mlm {command}: unexpected {type(error).__name__}: {BUG_REPORT}", file=sys.stderr)
        return 1
    print(f"mlm {command}: error: {message}", file=sys.stderr)
    return USER_ERROR_EXIT


def install_excepthook(command: str) -> None:
    """Reports an uncaught exception with `report` (for code that has no `main` to catch it).

    KFP ships a component's function body alone and calls it from its own executor, so the body
    calls this first: a known failure then ends the process with one line and status 2 (after
    running the `atexit` handlers, which remove scratch space), a bug with its traceback. It also
    makes TensorFlow start without its console noise and keeps temporary files in a folder of
    the process (`mlm.startup.private_tempdir`), as `mlm` does.
    """
    from mlm.startup import private_tempdir, quiet_tensorflow

    quiet_tensorflow()
    tempdir = private_tempdir()  # as `mlm` does: temporary files in a folder of this process
    tempdir.__enter__()
    atexit.register(tempdir.__exit__, None, None, None)

    def hook(kind: type[BaseException], error: BaseException, tb: object) -> None:
        if not isinstance(error, Exception):
            sys.__excepthook__(kind, error, tb)  # KeyboardInterrupt, SystemExit: as usual
            return
        status = report(error, command)
        if status == USER_ERROR_EXIT:
            sys.stderr.flush()
            sys.stdout.flush()
            atexit._run_exitfuncs()
            os._exit(status)

    sys.excepthook = hook
