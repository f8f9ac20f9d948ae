"""mcdrop serving: Monte-Carlo-dropout inference over gRPC on the LiteRT runtime.

Nothing under this package imports TensorFlow; the serving image ships without it.
"""

from __future__ import annotations

__version__ = "0.2.0"
