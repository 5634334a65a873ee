"""Released checkpoints of other systems, loaded into mowe models and written back in their own formats."""

from mowe.checkpoints.salmonn import add_salmonn_convert_cli, from_salmonn, salmonn_config, to_salmonn

__all__ = ["add_salmonn_convert_cli", "from_salmonn", "salmonn_config", "to_salmonn"]
