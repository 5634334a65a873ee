"""The one helper every file mowe reads goes through: it never blocks on a special file.

A plain ``open()`` on a FIFO with no writer waits forever, and a character device such as ``/dev/zero`` never
ends. :func:`open_for_reading` checks what the path is first:

* a regular file opens as usual;
* a FIFO is opened non-blocking and waited on for at most ``timeout`` seconds: a FIFO that has a writer (as
  with shell process substitution, ``--config <(cat run.yaml)``) is read as usual; one with no writer is
  refused with an error naming the path;
* a directory, a device or a socket is refused at once, naming the path.

The errors are :class:`OSError` subclasses (so callers that already turn ``OSError`` into a
:class:`~mowe.errors.ConfigError` / :class:`~mowe.errors.ManifestError` naming the file keep doing so) with
``filename`` set and a ``strerror`` that says what is wrong.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = [
    "FIFO_TIMEOUT_SECONDS",
    "SpecialFileError",
    "check_readable_file",
    "open_for_reading",
    "read_bytes",
    "strip_ansi",
    "read_text",
    "writing_to",
]

#: Seconds to wait for a FIFO's writer before giving up (``MOWE_FIFO_TIMEOUT`` overrides it).
FIFO_TIMEOUT_SECONDS = 10.0


class SpecialFileError(OSError):
    """A path that is not a regular file and cannot be read without blocking (names the path)."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory, not a file"
    if stat.S_ISCHR(mode):
        return "a character device, not a regular file"
    if stat.S_ISBLK(mode):
        return "a block device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    return "not a regular file"


def check_readable_file(path: str | os.PathLike | bytes) -> os.stat_result:
    """Stat ``path`` and refuse what cannot be read as a file (a directory, a device, a socket).

    FIFOs pass (:func:`open_for_reading` waits on them with a timeout). Returns the stat result.

    Raises:
        FileNotFoundError, PermissionError: as ``os.stat`` does (``filename`` is the path).
        IsADirectoryError: a directory.
        SpecialFileError: a device or a socket.
    """
    st = os.stat(path)
    mode = st.st_mode
    if stat.S_ISREG(mode) or stat.S_ISFIFO(mode):
        return st
    cls = IsADirectoryError if stat.S_ISDIR(mode) else SpecialFileError
    raise cls(errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL, _kind(mode), os.fsdecode(path))


def _fifo_timeout(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    env = os.environ.get("MOWE_FIFO_TIMEOUT")
    try:
        return float(env) if env else FIFO_TIMEOUT_SECONDS
    except ValueError:
        return FIFO_TIMEOUT_SECONDS


def _open_fifo(path: str | bytes, timeout: float) -> int:
    """A blocking read fd on FIFO ``path`` once it has data or its writer closed; refuses after
    ``timeout``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never blocks, writer or not
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            # Linux reports nothing on a FIFO that never had a writer: that is the "would block forever" case.
            if poller.poll(max(0, int(left * 1000))):
                break
            if left <= 0:
                raise SpecialFileError(
                    errno.EWOULDBLOCK,
                    f"a FIFO (named pipe) with no writer after {timeout:g} s; reading it would "
                    f"block (give a regular file, or write into the pipe)",
                    os.fsdecode(path),
                )
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_for_reading(
    path: str | os.PathLike | bytes,
    mode: str = "r",
    *,
    encoding: str | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> IO[Any]:
    """``open(path, mode)`` for reading that never hangs on a special file.

    Args:
        path: the file (str, bytes or path-like; non-UTF-8 names work as bytes or surrogate-escaped str).
        mode: ``"r"`` or ``"rb"`` (no writing modes).
        encoding: text encoding (text mode; default UTF-8).
        timeout: seconds to wait for a FIFO's writer (default :data:`FIFO_TIMEOUT_SECONDS`, or the
            ``MOWE_FIFO_TIMEOUT`` environment variable).
        **kwargs: passed to :func:`open` (e.g. ``errors``, ``newline``).

    Returns:
        An open file object.

    Raises:
        FileNotFoundError, PermissionError, IsADirectoryError: as ``open`` would (naming the path).
        SpecialFileError: a device, a socket, or a FIFO with no writer within ``timeout``.
    """
    if any(c in mode for c in "wax+"):
        raise ValueError(f"open_for_reading is for reading, got mode {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    path = os.fspath(path)
    st = check_readable_file(path)
    if stat.S_ISREG(st.st_mode):
        return open(path, mode, encoding=encoding, **kwargs)
    fd = _open_fifo(path, _fifo_timeout(timeout))
    return os.fdopen(fd, mode, encoding=encoding, **kwargs)


def read_bytes(path: str | os.PathLike | bytes, *, timeout: float | None = None) -> bytes:
    """The whole content of ``path`` (see :func:`open_for_reading`)."""
    with open_for_reading(path, "rb", timeout=timeout) as f:
        return f.read()


def read_text(
    path: str | os.PathLike | bytes, *, encoding: str = "utf-8", timeout: float | None = None
) -> str:
    """The whole content of ``path`` decoded as ``encoding`` (see :func:`open_for_reading`)."""
    with open_for_reading(path, "r", encoding=encoding, timeout=timeout) as f:
        return f.read()


_ERRNO_IN_TEXT = re.compile(r"os error (\d+)|\[Errno (\d+)\]|code: (\d+)")
_ERRNO_WORDS = {
    "No space left on device": errno.ENOSPC,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
    "Disk quota exceeded": errno.EDQUOT,
}


def _errno_of(exc: BaseException, path: str) -> int | None:
    m = _ERRNO_IN_TEXT.search(str(exc))
    if m:
        return int(next(g for g in m.groups() if g))
    for words, code in _ERRNO_WORDS.items():
        if words in str(exc):
            return code
    try:  # torch.save's writer reports a full disk only as "unexpected pos ..."
        if shutil.disk_usage(os.path.dirname(os.path.abspath(path)) or ".").free < (1 << 16):
            return errno.ENOSPC
    except OSError:
        pass
    return None


@contextmanager
def writing_to(path: str | os.PathLike) -> Iterator[None]:
    """Make a failure to write ``path`` an :class:`OSError` that names it.

    Writers such as safetensors (``SafetensorError``: "No space left on device (os error 28)") and torch.save
    (``RuntimeError``: "unexpected pos") report a full disk or a read-only folder without the file; Python's
    own ``write`` gives an ``OSError`` whose ``filename`` is None. Inside this block all of those become
    ``OSError(errno, strerror, path)`` (``PermissionError`` etc. by errno), chained to the original; other
    errors pass unchanged.
    """
    path = os.fspath(path)
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        code = e.errno if e.errno is not None else _errno_of(e, path)
        raise OSError(code, e.strerror or str(e), path) from e
    except Exception as e:
        code = _errno_of(e, path)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), path) from e


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (torch's weights-only refusal carries some)."""
    return _ANSI.sub("", text)
