"""mowe.io: reading that never hangs on a special file, and write failures that name their file."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time

import pytest

from mowe.io import (
    SpecialFileError,
    check_readable_file,
    open_for_reading,
    read_bytes,
    read_text,
    strip_ansi,
    writing_to,
)


def test_regular_files_read_and_directories_and_sockets_are_named(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("héllo")
    assert read_text(f) == "héllo" and read_bytes(f) == "héllo".encode()
    with pytest.raises(IsADirectoryError) as e:
        check_readable_file(tmp_path)
    assert e.value.filename == str(tmp_path)
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        with pytest.raises(SpecialFileError, match="a socket, not a regular file"):
            read_bytes(sock_path)
    with pytest.raises(ValueError, match="for reading"):
        open_for_reading(f, "w")


def test_a_fifo_without_writer_is_refused_after_the_timeout_and_one_with_a_writer_reads(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(SpecialFileError, match="no writer after 0.2 s") as e:
        read_text(fifo, timeout=0.2)
    assert time.monotonic() - t0 < 5 and e.value.filename == str(fifo)

    def write():
        with open(fifo, "w") as w:
            w.write("through the pipe")

    writer = threading.Thread(target=write)
    writer.start()
    assert read_text(fifo, timeout=5) == "through the pipe"
    writer.join(5)


def test_writing_to_names_the_file_a_writer_left_out(tmp_path):
    target = str(tmp_path / "w.safetensors")
    with pytest.raises(OSError) as e, writing_to(target):
        raise RuntimeError("No space left on device (os error 28)")  # safetensors' way of saying it
    assert e.value.errno == errno.ENOSPC and e.value.filename == target
    with pytest.raises(PermissionError) as e, writing_to(target):
        raise OSError(errno.EACCES, "Permission denied")
    assert e.value.filename == target
    with pytest.raises(KeyError), writing_to(target):  # not a write failure: unchanged
        raise KeyError("x")
    assert strip_ansi("\x1b[1mWeights\x1b[0m only") == "Weights only"
