"""Reading CTranslate2 ``model.bin`` files (the format faster-whisper ships) into torch tensors.

Binary layout (little-endian, CTranslate2 binary version 6 and earlier)::

    u32 version | str spec name | u32 spec revision | u32 variable count
    per variable: str name | u8 rank | u32 dims[rank] | u8 dtype | u32 byte count | raw bytes
    u32 alias count | per alias: str alias | str target

A ``str`` is a u16 length that counts a trailing NUL, then that many bytes. ``dtype`` codes:
0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Quantised models store an integer weight next
to a ``<name>_scale`` variable; :func:`dequantize` turns the pair back into floats.

Only the header of each variable is parsed eagerly; ``select`` skips the bytes of variables a caller does
not want (e.g. the decoder when only the encoder is loaded), so a large model is not read whole.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import torch

from mowe.errors import CheckpointError

__all__ = ["CT2Model", "dequantize", "read_ctranslate2"]

# dtype code -> (numpy dtype, torch dtype); bfloat16 is read as raw uint16 and reinterpreted.
_DTYPES: dict[int, tuple[np.dtype, torch.dtype]] = {
    0: (np.dtype("<f4"), torch.float32),
    1: (np.dtype("i1"), torch.int8),
    2: (np.dtype("<i2"), torch.int16),
    3: (np.dtype("<i4"), torch.int32),
    4: (np.dtype("<f2"), torch.float16),
    5: (np.dtype("<u2"), torch.bfloat16),
}


@dataclass
class CT2Model:
    """The content of a CTranslate2 ``model.bin``.

    Attributes:
        path: the file read.
        version: binary format version.
        spec: specification name, e.g. ``"WhisperSpec"``.
        revision: specification revision.
        variables: name -> tensor in its stored dtype (aliases resolved to the same tensor).
        aliases: alias -> target name, as stored.
        shapes: name -> shape of every stored variable, including those ``select`` skipped.
    """

    path: str
    version: int
    spec: str
    revision: int
    variables: dict[str, torch.Tensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def get(self, name: str) -> torch.Tensor:
        """The tensor called ``name``; a :class:`CheckpointError` naming the file and variable if absent."""
        if name not in self.variables:
            raise CheckpointError(f"{self.path}: variable {name!r} is missing from this {self.spec} model")
        return self.variables[name]


class _Reader:
    def __init__(self, f: BinaryIO, path: str, size: int):
        self.f, self.path, self.size = f, path, size
        self.where = "header"  # what is being read, for error messages

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise CheckpointError(
                f"{self.path}: file is truncated while reading {self.where} "
                f"(wanted {n} bytes at offset {self.f.tell() - len(data)}, file has {self.size})"
            )
        return data

    def u(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        n = self.u("H")
        raw = self.take(n)
        if n == 0 or raw[-1] != 0:
            raise CheckpointError(
                f"{self.path}: malformed string while reading {self.where} (no trailing NUL)"
            )
        return raw[:-1].decode("utf-8")


def read_ctranslate2(
    path: str | os.PathLike, *, select: Callable[[str], bool] | None = None, expect_spec: str | None = None
) -> CT2Model:
    """Parse a CTranslate2 ``model.bin``.

    Args:
        path: the ``model.bin`` file (or the folder holding it).
        select: keep only variables whose name it accepts (others are skipped without being read).
            Aliases are kept when their target is kept.
        expect_spec: raise unless the file's spec name equals this (e.g. ``"WhisperSpec"``).

    Returns:
        A :class:`CT2Model` with tensors in their stored dtypes.

    Raises:
        CheckpointError: missing file, truncated file, unknown dtype code, or an unexpected spec.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.bin")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such CTranslate2 model file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        r = _Reader(f, path, size)
        version = r.u("I")
        if not 1 <= version <= 6:
            raise CheckpointError(
                f"{path}: unsupported CTranslate2 binary version {version} (this reader knows 1-6)"
            )
        spec = r.string()
        if expect_spec is not None and spec != expect_spec:
            raise CheckpointError(f"{path}: model spec is {spec!r}, expected {expect_spec!r}")
        revision = r.u("I")
        count = r.u("I")
        model = CT2Model(path=path, version=version, spec=spec, revision=revision)
        for i in range(count):
            r.where = f"variable #{i}"
            name = r.string()
            r.where = f"variable {name!r}"
            rank = r.u("B")
            shape = tuple(r.u("I") for _ in range(rank))
            code = r.u("B")
            if code not in _DTYPES:
                raise CheckpointError(f"{path}: variable {name!r} has unknown dtype code {code}")
            nbytes = r.u("I")
            np_dtype, torch_dtype = _DTYPES[code]
            if nbytes != int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize:
                raise CheckpointError(
                    f"{path}: variable {name!r} has {nbytes} bytes, shape {shape} needs "
                    f"{int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize}"
                )
            model.shapes[name] = shape
            if select is not None and not select(name):
                if f.tell() + nbytes > size:
                    r.take(size - f.tell() + 1)  # raises the truncation error
                f.seek(nbytes, os.SEEK_CUR)
                continue
            arr = np.frombuffer(bytearray(r.take(nbytes)), dtype=np_dtype).reshape(shape)
            t = torch.from_numpy(arr)
            model.variables[name] = t.view(torch.bfloat16) if torch_dtype is torch.bfloat16 else t
        r.where = "the alias table"
        for _ in range(r.u("I")):
            alias, target = r.string(), r.string()
            model.aliases[alias] = target
            if target in model.variables:
                model.variables[alias] = model.variables[target]
    return model


def dequantize(model: CT2Model, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Variable ``name`` as ``dtype`` floats, undoing int8 / int16 quantisation via ``<name>_scale``.

    CTranslate2 stores ``round(w * scale)`` with a per-output-row scale for int8 (127 / row abs-max) and one
    scalar for int16, so ``w = q / scale``.
    """
    value = model.get(name)
    if value.dtype.is_floating_point:
        return value.to(dtype)
    scale = model.get(f"{name}_scale").to(torch.float32)
    if scale.dim() == 1:
        scale = scale[:, None]
    return (value.to(torch.float32) / scale).to(dtype)
