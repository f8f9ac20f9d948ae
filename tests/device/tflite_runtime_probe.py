"""Runs exported graphs on an older runtime: ``python tflite_runtime_probe.py JOB.json`` in a venv with
``tflite-runtime`` (2.14, 2023) and numpy < 2, where mcdrop itself is not installed.

JOB.json lists ``{"file", "inputs": NPZ, "outputs": NPZ, "invokes": N}``; each graph is loaded, its dynamic
inputs resized to the fed shapes, invoked N times, and every invoke's outputs are written (``o{invoke}_{name}``).
Prints the runtime's version as JSON.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tflite_runtime
from tflite_runtime.interpreter import Interpreter


def run(entry: dict) -> None:
    interpreter = Interpreter(model_path=entry["file"])
    feeds = dict(np.load(entry["inputs"]))
    details = {d["name"]: d for d in interpreter.get_input_details()}
    if set(details) != set(feeds):
        raise SystemExit(f"{entry['file']}: inputs {sorted(details)}, fed {sorted(feeds)}")
    for name, value in feeds.items():
        if tuple(details[name]["shape"]) != value.shape:
            interpreter.resize_tensor_input(details[name]["index"], list(value.shape), strict=True)
    interpreter.allocate_tensors()
    found = {}
    for invoke in range(entry.get("invokes", 1)):
        for name, value in feeds.items():
            interpreter.set_tensor(details[name]["index"], value)
        interpreter.invoke()
        for detail in interpreter.get_output_details():
            found[f"o{invoke}_{detail['name']}"] = interpreter.get_tensor(detail["index"])
    np.savez(entry["outputs"], **found)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        for job in json.load(handle):
            run(job)
    print(json.dumps({"tflite_runtime": tflite_runtime.__version__, "numpy": np.__version__}))
