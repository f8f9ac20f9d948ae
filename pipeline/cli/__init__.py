"""The pipeline's subcommands (train, export, export-batch, evaluate, bench, demo), one module each.

They are registered through the ``mcdrop.commands`` entry points and run by
``mcdrop.serving.cli``. Importing these modules is cheap: each handler checks that the
``train`` extra is installed, quiets TensorFlow, and only then imports what it needs.
"""

from __future__ import annotations

import argparse

from mcdrop.pipeline.shared.quiet import quiet_tensorflow
from mcdrop.pipeline.shared.strict_float32 import use_strict_float32
from mcdrop.serving.cli.arguments import require_extra

TRAIN_EXTRA = ("tensorflow", "keras", "sklearn")


def prepare(args: argparse.Namespace, *modules: str, strict_float32: bool = True) -> None:
    """Before a pipeline command runs: the extra it needs is installed, TensorFlow's logs are off (unless --debug),
    and (``strict_float32``) TensorFlow, the export's reference, computes in strict float32."""
    require_extra("train", *(modules or TRAIN_EXTRA))
    if strict_float32:
        use_strict_float32()
    quiet_tensorflow(debug=getattr(args, "debug", False))
