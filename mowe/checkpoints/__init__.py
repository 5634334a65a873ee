"""Released checkpoints of the seed systems, loaded into and written from mowe models."""

from mowe.checkpoints.ltu_as import (
    add_ltu_as_convert_cli,
    from_ltu_as,
    load_ltu_as_state_dict,
    ltu_as_state_dict,
    to_ltu_as,
)

__all__ = ["add_ltu_as_convert_cli", "from_ltu_as", "load_ltu_as_state_dict", "ltu_as_state_dict", "to_ltu_as"]
