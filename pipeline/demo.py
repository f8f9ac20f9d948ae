"""The demo's serving half: start ``mcdrop serve`` as a real process, query it, stop it with SIGTERM."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from serving.client import Client
from serving.commands import print_prediction
from serving.errors import MCDropError
from serving.process import free_port, serve_command, wait_serving

STARTUP_SECONDS = 60


def query_demo_server(repository: Path, log: Path, record: dict[str, Any]) -> int:
    in_distribution, out_of_distribution = _demo_inputs(record)
    port = free_port()
    command = serve_command(repository, port)
    with log.open("wb") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            with Client(f"127.0.0.1:{port}", timeout=30) as client:
                wait_serving(f"127.0.0.1:{port}", server, STARTUP_SECONDS)
                print("in-distribution: a held-out digit from the validation split")
                digit = client.predict("digits", in_distribution, samples=100, seed=0)
                print_prediction(digit)
                print("out-of-distribution: uniform noise in the pixel range (not a digit)")
                noise = client.predict("digits", out_of_distribution, samples=100, seed=0)
                print_prediction(noise)
                if digit.mutual_information is None or noise.mutual_information is None:
                    raise MCDropError("the demo model answered as a regressor; expected a classifier")
                mi_digit, mi_noise = float(digit.mutual_information[0]), float(noise.mutual_information[0])
                print(
                    f"mutual information (epistemic uncertainty): digit {mi_digit:.4f} nats, "
                    f"noise {mi_noise:.4f} nats ({mi_noise / max(mi_digit, 1e-12):.0f}x)"
                )
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=60)
    print(f"server stopped with exit code {code}; its log is {log}")
    return 0 if code == 0 else 1


def _demo_inputs(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    seed = record["config"]["seed"]
    _, x_val, _, _ = train_test_split(
        digits.data, digits.target, test_size=round(len(digits.data) * record["config"]["val_fraction"]),
        random_state=seed, stratify=digits.target,
    )  # fmt: skip
    noise = np.random.default_rng(seed).uniform(0, 16, size=(1, 64))
    return x_val[:1].astype(np.float32), noise.astype(np.float32)
