"""Keep TensorFlow's start-up chatter off the user's screen; ``--debug`` shows it.

TensorFlow and XLA log from C++ straight to file descriptor 2 ("E0000 … failed call to
cuInit", oneDNN notices, "All log messages before absl::InitializeLog() …"), partly before
``TF_CPP_MIN_LOG_LEVEL`` is read, and Keras warns through Python's ``warnings``. So, before
TensorFlow is imported: descriptor 2 goes to the null device, while Python's ``sys.stderr``
(our messages, progress bars, tracebacks) keeps writing to the original stream through a
duplicate of the descriptor.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

_done = False


def quiet_tensorflow(debug: bool = False) -> None:
    """Silence native and Python-level TensorFlow/Keras logs for the rest of the process (unless ``debug``).

    Call it before TensorFlow is imported; calling it again does nothing.
    """
    global _done
    if debug or _done:
        return
    _done = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    for name in ("absl", "tensorflow", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _native_stderr_to_null()


def _native_stderr_to_null() -> None:
    try:
        original = os.dup(2)
    except OSError:  # no descriptor 2 at all: nothing to protect
        return
    sys.stderr.flush()
    python_stderr = open(  # noqa: SIM115 - lives as long as the process, like sys.stderr itself
        original, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace"
    )
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    sys.stderr = python_stderr
