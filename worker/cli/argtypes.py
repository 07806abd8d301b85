"""Moved to ``worker.cli_support.argtypes``; this alias keeps in-flight branches importing.

Remove once no module imports ``worker.cli.argtypes`` (``grep -r worker.cli.argtypes``).
"""

from worker.cli_support.argtypes import non_negative_float, positive_float, positive_int

__all__ = ["non_negative_float", "positive_float", "positive_int"]
