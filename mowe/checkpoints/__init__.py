"""Released checkpoints of the seed systems (SALMONN, LTU-AS), loaded into mowe models and written back in their
own formats (``mowe convert salmonn`` / ``ltu-as``: :mod:`mowe.cli_convert`)."""

from mowe.checkpoints.ltu_as import (
    from_ltu_as,
    load_ltu_as_state_dict,
    ltu_as_state_dict,
    to_ltu_as,
)
from mowe.checkpoints.salmonn import from_salmonn, salmonn_config, to_salmonn

__all__ = [
    "from_ltu_as",
    "from_salmonn",
    "load_ltu_as_state_dict",
    "ltu_as_state_dict",
    "salmonn_config",
    "to_ltu_as",
    "to_salmonn",
]
