"""Moved to :mod:`mowe.data.processor`; this re-export keeps ``from mowe.processor import MoWEProcessor`` working."""

from mowe.data.processor import *  # noqa: F401,F403
from mowe.data.processor import __all__  # noqa: F401
