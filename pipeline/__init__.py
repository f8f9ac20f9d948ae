"""mcdrop pipeline: train Keras 3 dropout models and export them to LiteRT.

Importing this package is cheap: TensorFlow and Keras are imported only by the
modules that need them, so ``mcdrop serve`` works without the ``train`` extra.
"""

from __future__ import annotations
