"""Audio encoders behind one protocol (see :mod:`mowe.encoders.base`) and the weak pool that runs them."""

from mowe.encoders.base import AudioEncoder, EncoderOutput, check_waveforms, lengths_to_mask, set_trainable
from mowe.encoders.cache import FeatureCache, cached_encode
from mowe.encoders.hubert import HubertEncoder
from mowe.encoders.pool import WeakEncoderPool
from mowe.encoders.span import ClipSpan
from mowe.encoders.whisper import LogMelFrontend, WhisperEncoder

__all__ = [
    "AudioEncoder",
    "BEATsEncoder",
    "ClipSpan",
    "EncoderOutput",
    "FeatureCache",
    "HubertEncoder",
    "LogMelFrontend",
    "PitchEncoder",
    "SpeakerEncoder",
    "WeakEncoderPool",
    "WhisperEncoder",
    "cached_encode",
    "check_waveforms",
    "lengths_to_mask",
    "set_trainable",
]


def __getattr__(name: str):
    if name == "BEATsEncoder":  # imported lazily: it is the largest encoder module and optional for most users
        from mowe.encoders.beats import BEATsEncoder

        return BEATsEncoder
    if name == "SpeakerEncoder":  # pretrained-only encoders, imported on first use
        from mowe.encoders.speaker import SpeakerEncoder

        return SpeakerEncoder
    if name == "PitchEncoder":
        from mowe.encoders.pitch import PitchEncoder

        return PitchEncoder
    raise AttributeError(name)
