"""Audio encoders behind one protocol (see :mod:`mowe.encoders.base`) and the weak pool that runs them."""

from mowe.encoders.base import AudioEncoder, EncoderOutput, check_waveforms, set_trainable
from mowe.encoders.beats import BEATsEncoder
from mowe.encoders.cache import FeatureCache, cached_encode
from mowe.encoders.hubert import HubertEncoder
from mowe.encoders.pitch import PitchEncoder
from mowe.encoders.pool import WeakEncoderPool
from mowe.encoders.span import ClipSpan
from mowe.encoders.speaker import SpeakerEncoder
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
    "set_trainable",
]
