"""Keras models the project did not build, for export tests."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np


def sequential_mlp(path: Path) -> Path:
    """A plain Sequential classifier: 20 → 32 → 16 → 4 with dropout 0.3 and 0.5."""
    keras.utils.set_random_seed(3)  # also sets TF's global seed: the export must still draw fresh masks
    model = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model.save(path)
    return path


def functional_cnn(path: Path) -> Path:
    """Conv → BatchNorm → SpatialDropout2D → pool → conv → dense, plus a Dropout called with training=True."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.SpatialDropout2D(0.3, name="spatial")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="relu")(h)
    # The classic MC-dropout recipe: Keras's converter silently removes this dropout.
    h = keras.layers.Dropout(0.4, name="always_on")(h, training=True)
    outputs = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    # Non-trivial moving statistics: training-mode BatchNorm would give visibly different outputs.
    bn = model.get_layer("bn")
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.normal(size=8).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=8).astype("float32"))
    model.save(path)
    return path


def regression_with_skip(path: Path) -> Path:
    """Vector regression mixing a pre-dropout tensor with post-dropout ones, with GaussianDropout."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((6,))
    h0 = keras.layers.Dense(12, activation="tanh")(inputs)
    h = keras.layers.Dropout(0.2)(h0)
    h = keras.layers.Dense(12, activation="relu")(h)
    h = keras.layers.GaussianDropout(0.3)(h)
    h = keras.layers.Add()([h, h0])  # h0 is computed once per input and must be tiled here
    outputs = keras.layers.Dense(2)(h)
    keras.Model(inputs, outputs).save(path)
    return path


def without_dropout(path: Path) -> Path:
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
    model.save(path)
    return path


def with_layer(path: Path, layer: keras.layers.Layer) -> Path:
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), layer, keras.layers.Dense(1)])
    model.save(path)
    return path
