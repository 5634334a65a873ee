"""Router usage shares and the heatmap file."""

from __future__ import annotations

import numpy as np
import pytest

from mowe.errors import MoWEInputError
from mowe.evaluation.plots import plot_router_heatmap, router_usage

pytest.importorskip("matplotlib", reason="the heatmap needs matplotlib")


def test_router_usage_shares_and_heatmap(tmp_path):
    counts = {"tone": [3, 1, 0], "asr": [0, 0, 0], "caption": [1, 1, 2]}
    tasks, m = router_usage(counts)
    assert tasks == ["asr", "caption", "tone"]
    np.testing.assert_allclose(m, [[0, 0, 0], [0.25, 0.25, 0.5], [0.75, 0.25, 0]])
    drawn = plot_router_heatmap(counts, ["a", "b", "c"], tmp_path / "h.png")
    np.testing.assert_allclose(drawn, m)
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(MoWEInputError, match="task 'asr' have 3 entries; expected 2"):
        plot_router_heatmap(counts, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(MoWEInputError, match="empty"):
        plot_router_heatmap({}, ["a"], tmp_path / "y.png")
