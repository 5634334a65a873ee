"""An on-disk cache of frozen encoders' features, shared by processes, keyed by audio content and encoder.

Shape legend: ``b`` batch, ``s`` samples, ``t`` frames, ``d`` feature width, ``l`` layers.

A frozen encoder (no parameter requires grad, module in eval mode) is a fixed function of its input clip, yet
the trainer re-runs it on every clip in every epoch. :func:`cached_encode` looks every clip of a batch up in a
:class:`FeatureCache`, runs the encoder on the misses only (one sub-batch, trimmed to the longest miss),
stores their features and returns the batch's :class:`~mowe.encoders.base.EncoderOutput`.

Storage: one safetensors file per (encoder, clip) entry, ``<root>/<fingerprint>/<aa>/<audio
key>.safetensors``, holding the clip's valid frames ``features (t, d)`` (and ``hidden_states (l, t, d)`` when
the encoder returns them) in the encoder's own dtype. One file per entry rather than shards, because then
every write is one atomic ``os.replace`` of a private temp file, no process ever rewrites or compacts a file
another one may be reading, eviction is one ``unlink``, and nothing needs a lock; safetensors keeps dtype and
shape and is read without pickle.

Keys:

* the **audio key** hashes the clip's valid samples (its dtype name and raw bytes), so padding and batch
  position do not matter;
* the **encoder fingerprint** hashes the class, every scalar setting of the encoder and its submodules
  (``pad_to_30s``, ``hop``, ``out_dim``, dropout ``p``, ...), a transformers ``config`` when there is one, the
  device type and the bytes of all parameters and buffers (not the autocast state: a frozen encoder runs in
  its own dtype with autocast off, so mixed-precision training and float32 evaluation share its entries). The
  weight hash is computed once per encoder and recomputed only when a tensor's identity, version counter,
  dtype, shape or device changes (optimizer steps, ``load_state_dict`` and ``.to()`` all do); in-place edits
  through ``param.data`` bypass the version counter: call :func:`forget_weight_hash` after those. New weights
  or settings give a new fingerprint folder, so stale entries are never read (and age out under
  ``max_bytes``).

Guarantees and limits:

* **Exactness**: an entry holds the very tensor the encoder computed for the clip; a hit returns it bit for
  bit. A cached batch equals a live call bit for bit when the encoder's per-clip output does not depend on the
  other clips of its batch (Whisper's and HuBERT's length groups with ``bucket_padding="auto"`` on a CPU put
  clips of distinct lengths in groups of their own; clips that share a group with others differ from the lone
  clip at float rounding level, ~1e-6, as the live encoder's own batching does). Frames past a clip's length
  are zeros, and the time axis ends at the batch's longest valid output.
* **Sharing**: a writer saves to a temp file in the entry's folder and ``os.replace``-s it in, so a reader
  sees a whole entry or none; two processes writing one key write the same bytes and the last rename wins.
* **Size**: with ``max_bytes`` set, the least recently used entries (file mtime, refreshed on every hit) are
  deleted once the folder grows past ``max_bytes``, down to 90 % of it; an entry larger than ``max_bytes``
  is not stored. Other processes' writes count once this process rescans the folder (on its own overflow).
* **Damage**: an entry that cannot be read, or whose metadata or shapes do not match its key, is a miss: a
  warning names the file, the entry is recomputed and rewritten. The cache is derived data; a damaged file
  must not stop a training run.
* **Bypass**: trainable encoders, encoders in train mode and waveforms that require grad always run live.

Example:
    >>> cache = FeatureCache("/tmp/mowe-features", max_bytes=2**30)  # doctest: +SKIP
    >>> out = cached_encode(encoder, waveforms, lengths, cache, name="strong")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from safetensors.torch import load, save_file
from torch import nn

from mowe.encoders.base import EncoderOutput, check_encoder_output, check_waveforms
from mowe.errors import MoWEInputError

__all__ = [
    "CacheStats",
    "FeatureCache",
    "cached_encode",
    "encoder_fingerprint",
    "forget_weight_hash",
    "is_cacheable",
]

_SUFFIX = ".safetensors"
_FORMAT = "mowe-feature-cache-1"
# encoder -> (tensor signature, weight digest): a weak map, so deleted encoders leave nothing behind and the
# cache object itself stays picklable (DDP spawn, DataLoader workers).
_WEIGHT_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SCALARS = (bool, int, float, str, type(None))


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=20)
    for p in parts:
        h.update(p)
    return h.hexdigest()


def _tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(module.named_parameters(remove_duplicate=False)) + list(
        module.named_buffers(remove_duplicate=False)
    )


def _signature(module: nn.Module) -> tuple:
    return tuple(
        (n, t.data_ptr(), t._version, t.dtype, tuple(t.shape), t.device) for n, t in _tensors(module)
    )


def forget_weight_hash(encoder: nn.Module) -> None:
    """Drop the remembered weight hash of ``encoder`` (after editing weights in place through
    ``param.data``)."""
    _WEIGHT_HASHES.pop(encoder, None)


def _weight_hash(encoder: nn.Module) -> str:
    sig = _signature(encoder)
    memo = _WEIGHT_HASHES.get(encoder)
    if memo is not None and memo[0] == sig:
        return memo[1]
    h = hashlib.blake2b(digest_size=20)
    for name, t in _tensors(encoder):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy())
    _WEIGHT_HASHES[encoder] = (sig, h.hexdigest())
    return h.hexdigest()


def _settings(encoder: nn.Module) -> list:
    """Every scalar attribute (and tuple of scalars) of the encoder and its submodules, plus HF configs."""
    out = []
    for path, m in encoder.named_modules():
        attrs = {}
        for k, v in vars(m).items():
            if k.startswith("_") or k in (
                "training",
                "source",
            ):  # mode is checked apart; source is provenance
                continue
            if isinstance(v, _SCALARS) or (
                isinstance(v, (tuple, list)) and all(isinstance(x, _SCALARS) for x in v)
            ):
                attrs[k] = v
            elif hasattr(v, "to_dict") and k == "config":
                attrs[k] = v.to_dict()
        out.append([path, f"{type(m).__module__}.{type(m).__qualname__}", attrs])
    return out


def encoder_fingerprint(encoder: nn.Module) -> str:
    """A hex digest that changes when the encoder's class, settings, weights, dtype or device type change.

    The autocast state is not part of it: :func:`cached_encode` runs frozen encoders with autocast off."""
    device = next((t.device.type for _, t in _tensors(encoder)), "cpu")
    blob = json.dumps({"settings": _settings(encoder), "device": device}, sort_keys=True, default=str)
    return _digest(blob.encode(), _weight_hash(encoder).encode())


def is_cacheable(encoder: nn.Module) -> bool:
    """True for a frozen encoder wholly in eval mode: its output is a fixed function of the clip."""
    return not any(m.training for m in encoder.modules()) and not any(
        p.requires_grad for p in encoder.parameters()
    )


@dataclass
class CacheStats:
    """Counters of one process: ``hits``/``misses`` per encoder name, entries ``refused`` (too large),
    ``evicted`` and ``damaged`` (unreadable, treated as misses)."""

    hits: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    evicted: int = 0
    damaged: int = 0


@dataclass
class _Entry:
    features: torch.Tensor  # (t, d)
    hidden_states: torch.Tensor | None  # (l, t, d)


class FeatureCache:
    """Frozen-encoder features on disk (see the module docstring for keys, sharing, eviction and damage).

    Args:
        directory: the cache's root folder (created if missing); several processes may share it.
        max_bytes: size bound of the folder; None for unbounded. Least recently used entries go first.
    """

    def __init__(self, directory: str | os.PathLike, *, max_bytes: int | None = None):
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0
        ):
            raise MoWEInputError(f"max_bytes must be a positive integer or None, got {max_bytes!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        os.makedirs(self.directory, exist_ok=True)
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._approx_bytes: int | None = None  # this process's running estimate; None until the first scan

    def __repr__(self) -> str:
        return f"FeatureCache({self.directory!r}, max_bytes={self.max_bytes})"

    # ----------------------------------------------------------------------------------------- entries
    def path(self, fingerprint: str, audio_key: str) -> str:
        """The file of one entry."""
        return os.path.join(self.directory, fingerprint[:32], audio_key[:2], audio_key + _SUFFIX)

    def get(self, fingerprint: str, audio_key: str) -> _Entry | None:
        """The stored entry, or None (absent, or damaged: then a warning names the file and it is removed)."""
        path = self.path(fingerprint, audio_key)
        try:
            # One read of the whole file through one descriptor: once open, another process's eviction
            # (unlink) or rewrite (rename) cannot pull the file away mid-read, as a reader that re-opens by
            # name could.
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        try:
            (n,) = struct.unpack("<Q", data[:8])
            meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
            tensors = load(data)
            feats, hidden = tensors["features"], tensors.get("hidden_states")
        except Exception as e:  # noqa: BLE001 - any unreadable entry is a miss, whatever the parser raised
            return self._damaged(path, f"unreadable ({type(e).__name__}: {e})")
        if (
            meta.get("format") != _FORMAT
            or meta.get("fingerprint") != fingerprint
            or meta.get("audio") != audio_key
        ):
            return self._damaged(path, "metadata does not match its key")
        if feats.dim() != 2 or (
            hidden is not None and (hidden.dim() != 3 or hidden.shape[1] != feats.shape[0])
        ):
            return self._damaged(path, f"unexpected shapes {tuple(feats.shape)}")
        try:
            os.utime(path)  # LRU clock: a hit makes the entry young again
        except OSError:
            pass
        return _Entry(feats, hidden)

    def _damaged(self, path: str, why: str) -> None:
        self.stats.damaged += 1
        warnings.warn(f"feature cache entry {path}: {why}; treated as a miss and recomputed", stacklevel=3)
        try:
            os.unlink(path)
        except OSError:
            pass

    def put(
        self,
        fingerprint: str,
        audio_key: str,
        features: torch.Tensor,
        hidden_states: torch.Tensor | None = None,
    ) -> bool:
        """Store one clip's ``features (t, d)`` (and ``hidden_states (l, t, d)``); False if refused (too
        large)."""
        tensors = {"features": features.detach().to("cpu").contiguous()}
        if hidden_states is not None:
            tensors["hidden_states"] = hidden_states.detach().to("cpu").contiguous()
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if self.max_bytes is not None and size > self.max_bytes:
            self.stats.refused += 1
            return False
        path = self.path(fingerprint, audio_key)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=_SUFFIX, dir=folder)
        os.close(fd)
        try:
            save_file(
                tensors, tmp, metadata={"format": _FORMAT, "fingerprint": fingerprint, "audio": audio_key}
            )
            written = os.path.getsize(
                tmp
            )  # the entry may be evicted by another process right after the rename
            os.replace(tmp, path)  # atomic: readers see the old entry, the new one, or none; never a part
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if self.max_bytes is not None:
            if self._approx_bytes is None:
                self._approx_bytes = self.size_bytes()
            else:
                self._approx_bytes += written
            if self._approx_bytes > self.max_bytes:
                self._evict()
        return True

    # ----------------------------------------------------------------------------------------- size
    def _entries(self) -> list[tuple[float, int, str]]:
        """(mtime, bytes, path) of every stored entry, temp files of writers in flight excluded."""
        out = []
        for root, _, files in os.walk(self.directory):
            for name in files:
                if name.endswith(_SUFFIX) and not name.startswith(".tmp-"):
                    p = os.path.join(root, name)
                    try:
                        st = os.stat(p)
                    except FileNotFoundError:  # evicted by another process meanwhile
                        continue
                    out.append((st.st_mtime, st.st_size, p))
        return out

    def size_bytes(self) -> int:
        """Bytes of all entries in the folder (all processes' writes)."""
        return sum(size for _, size, _ in self._entries())

    def __len__(self) -> int:
        return len(self._entries())

    def _evict(self) -> None:
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        target = int(0.9 * self.max_bytes)  # hysteresis: not one rescan per write once full
        for _, size, p in entries:
            if total <= target:
                break
            try:
                os.unlink(p)
                self.stats.evicted += 1
            except FileNotFoundError:
                pass
            total -= size
        self._approx_bytes = total

    def clear(self) -> None:
        """Delete every entry."""
        for _, _, p in self._entries():
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        self._approx_bytes = 0


def audio_keys(waveforms: torch.Tensor, lengths: list[int]) -> list[str]:
    """One content hash per clip over its valid samples (dtype name + raw bytes)."""
    host = waveforms.detach().to("cpu")
    # uint8 views hash the bytes in place (no copy) and work for every dtype, bfloat16 included.
    return [
        _digest(str(host.dtype).encode(), host[i, :n].contiguous().view(torch.uint8).numpy())
        for i, n in enumerate(lengths)
    ]


def cached_encode(
    encoder: nn.Module,
    waveforms: torch.Tensor,
    lengths: torch.Tensor | None,
    cache: FeatureCache | None,
    *,
    name: str = "encoder",
) -> EncoderOutput:
    """``encoder(waveforms, lengths)`` through ``cache``: hits are read, misses encoded in one sub-batch.

    Args:
        encoder: any module under :mod:`mowe.encoders.base`'s protocol. Trainable or train-mode encoders (and
            waveforms that require grad) bypass the cache and run live.
        waveforms: ``(b, s)`` zero-padded 16 kHz clips; ``lengths``: ``(b,)`` valid samples (None: all ``s``).
        cache: the cache, or None to run live.
        name: the encoder's name in :attr:`FeatureCache.stats` and in error messages.

    Returns:
        ``features (b, t, d)`` in the encoder's dtype, ``t`` the longest clip's valid frames, zeros past each
        clip's ``lengths``; ``hidden_states (b, l, t, d)`` when the encoder returns them.

    A frozen, eval-mode encoder runs with autocast off, cache or not: it is a fixed feature extractor, so its
    features do not depend on the mixed precision the rest of the model trains in (give it
    ``EncoderConfig.dtype="bfloat16"`` to run it in bf16), and training and evaluation share cache entries.
    """
    if not is_cacheable(encoder) or waveforms.requires_grad:
        return encoder(waveforms, lengths)
    with torch.autocast(waveforms.device.type, enabled=False):
        return _cached_encode(encoder, waveforms, lengths, cache, name=name)


def _cached_encode(
    encoder: nn.Module,
    waveforms: torch.Tensor,
    lengths: torch.Tensor | None,
    cache: FeatureCache | None,
    *,
    name: str,
) -> EncoderOutput:
    if cache is None:
        return encoder(waveforms, lengths)
    lengths = check_waveforms(
        waveforms, lengths, min_samples=int(getattr(encoder, "min_samples", 0)), name=name
    )
    host = lengths.tolist()
    fp = encoder_fingerprint(encoder)
    keys = audio_keys(waveforms, host)
    entries: list[_Entry | None] = [cache.get(fp, k) for k in keys]
    miss = [i for i, e in enumerate(entries) if e is None]
    cache.stats.hits[name] = cache.stats.hits.get(name, 0) + len(keys) - len(miss)
    cache.stats.misses[name] = cache.stats.misses.get(name, 0) + len(miss)
    device = waveforms.device
    if miss:
        idx = torch.tensor(miss, device=device)
        live = encoder(waveforms[idx, : max(host[i] for i in miss)], lengths[idx])
        live = check_encoder_output(live, batch=len(miss), out_dim=int(encoder.out_dim), who=repr(name))
        for j, (i, n) in enumerate(zip(miss, live.lengths.tolist())):
            hidden = live.hidden_states[j, :, :n] if live.hidden_states is not None else None
            entries[i] = _Entry(live.features[j, :n], hidden)
            cache.put(fp, keys[i], entries[i].features, hidden)
    return _assemble(entries, device)


def _assemble(entries: list[_Entry], device: torch.device) -> EncoderOutput:
    """Pad per-clip entries to the longest one: ``(b, t, d)`` (+ ``(b, l, t, d)``), zeros past each length."""
    t = max(e.features.shape[0] for e in entries)
    feats = torch.stack([F.pad(e.features.to(device), (0, 0, 0, t - e.features.shape[0])) for e in entries])
    lengths = torch.tensor([e.features.shape[0] for e in entries], dtype=torch.long, device=device)
    hidden = None
    if all(e.hidden_states is not None for e in entries):
        hidden = torch.stack(
            [F.pad(e.hidden_states.to(device), (0, 0, 0, t - e.hidden_states.shape[1])) for e in entries]
        )
    return EncoderOutput(features=feats, lengths=lengths, hidden_states=hidden)
