"""``python -m mcdrop.serving.cli``: the ``mcdrop`` command line."""

from mcdrop.serving.cli import run

run()
