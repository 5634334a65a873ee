"""Connectors (projectors) from encoder features into the LLM embedding space."""

from mowe.connectors.base import ConnectorOutput
from mowe.connectors.basic import ConvConnector, FrameStackConnector, LinearConnector, MLPConnector
from mowe.connectors.budget import TokenBudget
from mowe.connectors.pooled import StatsPoolConnector
from mowe.connectors.qformer import WindowQFormerConnector
from mowe.connectors.tltr import TLTRConnector

__all__ = [
    "ConnectorOutput",
    "ConvConnector",
    "FrameStackConnector",
    "LinearConnector",
    "MLPConnector",
    "StatsPoolConnector",
    "TLTRConnector",
    "TokenBudget",
    "WindowQFormerConnector",
]
