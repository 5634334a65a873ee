"""Released checkpoints of the seed systems (SALMONN, LTU-AS), loaded into mowe models and written back in their
own formats. ``mowe.convert`` re-exports these functions."""

from mowe.checkpoints.ltu_as import (
    add_ltu_as_convert_cli,
    from_ltu_as,
    load_ltu_as_state_dict,
    ltu_as_state_dict,
    to_ltu_as,
)
from mowe.checkpoints.salmonn import add_salmonn_convert_cli, from_salmonn, salmonn_config, to_salmonn

__all__ = [
    "add_ltu_as_convert_cli",
    "add_salmonn_convert_cli",
    "from_ltu_as",
    "from_salmonn",
    "load_ltu_as_state_dict",
    "ltu_as_state_dict",
    "salmonn_config",
    "to_ltu_as",
    "to_salmonn",
]
