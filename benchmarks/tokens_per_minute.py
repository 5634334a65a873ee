"""Audio tokens per audio minute for each connector kind, with and without a token budget (the README's
table).

Nothing is run or timed: each connector's ``out_lengths`` maps frame counts to tokens, at the strong encoder's
50 frames/s (Whisper), and :class:`mowe.connectors.TokenBudget` gives the pooling a budget applies. The
options are each kind's defaults (``qformer``: SALMONN's 17-frame windows, one query; ``tltr``: LTU-AS's
pooling by 20). ``tests/connectors/test_budget.py`` checks that the README holds exactly these rows.

    python benchmarks/tokens_per_minute.py
"""

from __future__ import annotations

from mowe.builders import build_connector
from mowe.config import ConnectorConfig
from mowe.connectors.budget import TokenBudget, audio_tokens

FRAME_RATE = 50.0  # Whisper's frames per second
WINDOW_CAP, CLIP_CAP = 50, 4000
KINDS = {  # kind -> (options that only size the module, as the table describes the default token counts)
    "linear": {},
    "mlp": {},
    "stack": {},
    "conv": {},
    "stats": {},
    "qformer": {"hidden_dim": 8, "num_heads": 2},
    "tltr": {"num_layers_in": 2, "layer_heads": 1},
}
HEADER = [
    "| connector | 1 min | 60 min | 60 min, `max_tokens_per_window=50` | 60 min, `max_tokens=4000` |",
    "|---|---|---|---|---|",
]


def rows() -> list[str]:
    """The table's lines: tokens for 1 and 60 minutes, and for 60 minutes under each kind of budget."""
    window = TokenBudget(max_tokens_per_window=WINDOW_CAP, window_frames=round(30 * FRAME_RATE))
    clip = TokenBudget(max_tokens=CLIP_CAP)
    out = list(HEADER)
    for kind, options in KINDS.items():
        connector = build_connector(ConnectorConfig(kind, options), in_dim=8, out_dim=8)
        n = connector.out_lengths
        cells = [
            audio_tokens(n, seconds=s, frame_rate=FRAME_RATE, budget=b)
            for s, b in ((60, None), (3600, None), (3600, window), (3600, clip))
        ]
        out.append(f"| `{kind}` | " + " | ".join(f"{c:,}" for c in cells) + " |")
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
