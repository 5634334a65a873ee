"""SALMONN (Tang et al., arXiv 2310.13289) in one place: its preset, curriculum, prompt format, and its
released checkpoint's format both ways (``mowe convert salmonn``).

Its parts are mowe's generic ones: Whisper and BEATs (:mod:`mowe.encoders`), per-stream LayerNorms
(:class:`~mowe.connectors.norm.PerStreamNorm`) and the window-level Q-Former
(:class:`~mowe.connectors.qformer.WindowQFormerConnector`).

Example:
    >>> from mowe.salmonn import salmonn
    >>> salmonn(tiny=True).config.connector.kind
    'qformer'
"""

from mowe.salmonn.checkpoint import from_salmonn, load_salmonn, salmonn_config, to_salmonn
from mowe.salmonn.convert import CONVERTER
from mowe.salmonn.preset import SALMONN_ACTIVATION_TASKS, SALMONN_PRETRAIN_TASKS, preset_stages, salmonn
from mowe.salmonn.prompt import PROMPT_TEMPLATE
from mowe.salmonn.stages import salmonn_stages

__all__ = [
    "CONVERTER",
    "PROMPT_TEMPLATE",
    "SALMONN_ACTIVATION_TASKS",
    "SALMONN_PRETRAIN_TASKS",
    "from_salmonn",
    "load_salmonn",
    "preset_stages",
    "salmonn",
    "salmonn_config",
    "salmonn_stages",
    "to_salmonn",
]
