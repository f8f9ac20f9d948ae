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


# Dropout that lives inside layers (M2.2) ---------------------------------------------------------


def _save(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


def sequence_model(path: Path, recurrent: keras.layers.Layer, outputs: int = 3) -> Path:
    """``recurrent`` over 6 steps of 4 features, then a softmax (or linear when ``outputs`` is 1) head."""
    keras.utils.set_random_seed(6)
    activation = "softmax" if outputs > 1 else None
    model = keras.Sequential([keras.Input((6, 4)), recurrent, keras.layers.Dense(outputs, activation=activation)])
    return _save(model, path)


def attention_model(path: Path) -> Path:
    keras.utils.set_random_seed(7)
    inputs = keras.Input((6, 4))
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.3, name="attention")(inputs, inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(attended))
    return _save(keras.Model(inputs, outputs), path)


def time_distributed_dropout(path: Path) -> Path:
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((6, 4)), keras.layers.Dense(5),
                              keras.layers.TimeDistributed(keras.layers.Dropout(0.3), name="per_step"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])  # fmt: skip
    return _save(model, path)


def alpha_dropout(path: Path) -> Path:
    keras.utils.set_random_seed(9)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="selu"),
                              keras.layers.AlphaDropout(0.2, name="alpha"), keras.layers.Dense(2)])  # fmt: skip
    return _save(model, path)


def encoder_block(width: int, heads: int, name: str) -> keras.Model:
    """A Transformer encoder block as a nested functional model: attention (with dropout) + residual + LayerNorm,
    feed-forward + Dropout + residual + LayerNorm."""
    inputs = keras.Input((None, width))
    attention = keras.layers.MultiHeadAttention(heads, width // heads, dropout=0.1, name="self_attention")
    attended = attention(inputs, inputs)
    h = keras.layers.LayerNormalization(name="norm_1")(inputs + attended)
    ff = keras.layers.Dense(2 * width, activation="relu", name="ff_1")(h)
    ff = keras.layers.Dense(width, name="ff_2")(ff)
    ff = keras.layers.Dropout(0.2, name="ff_dropout")(ff)
    outputs = keras.layers.LayerNormalization(name="norm_2")(h + ff)
    return keras.Model(inputs, outputs, name=name)


def transformer_classifier(path: Path, tokens: int = 50, length: int = 12, width: int = 16) -> Path:
    """Integer tokens → Embedding → encoder block (nested model) → mean over positions → softmax over 3 classes."""
    keras.utils.set_random_seed(10)
    inputs = keras.Input((length,), dtype="int32")
    h = keras.layers.Embedding(tokens, width, name="embedding")(inputs)
    h = encoder_block(width, 2, "encoder")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    outputs = keras.layers.Dense(3, activation="softmax")(h)
    return _save(keras.Model(inputs, outputs, name="transformer"), path)


def conv1d_spatial(path: Path) -> Path:
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((16, 3)), keras.layers.Conv1D(8, 3, activation="relu"),
                              keras.layers.SpatialDropout1D(0.2, name="spatial"),
                              keras.layers.GlobalMaxPooling1D(), keras.layers.Dense(2)])  # fmt: skip
    return _save(model, path)


def residual_stochastic_depth(path: Path) -> Path:
    """Two ConvNeXt-like residual blocks on 8 x 8 x 3 images, one with Keras's own ``StochasticDepth`` (rate 0.2)
    and one with a user's ``DropPath`` (0.3), then pooling and a ``Dropout(0.3)`` head over 4 classes."""
    from keras.src.applications.convnext import StochasticDepth

    from tests.pipeline.export.custom_layers import DropPath

    keras.utils.set_random_seed(9)
    inputs = keras.Input((8, 8, 3), name="x")
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    for i, rate in enumerate((0.2, 0.3)):
        branch = keras.layers.DepthwiseConv2D(3, padding="same")(x)
        branch = keras.layers.LayerNormalization()(branch)
        branch = keras.layers.Dense(32, activation="gelu")(branch)
        branch = keras.layers.Dense(16)(branch)
        branch = (StochasticDepth(rate, name="sd0") if i == 0 else DropPath(rate, name="dp1"))(branch)
        x = keras.layers.Add()([x, branch])
    x = keras.layers.Dropout(0.3, name="dropout")(keras.layers.GlobalAveragePooling2D()(x))
    return _save(keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="y")(x)), path)


def segmentation_scenes(rows: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images of three regions (left, right-top, right-bottom) told apart by colour, and their per-pixel class."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.where(xx < size // 2, 0, np.where(yy < size // 2, 1, 2)).astype(np.int64)
    labels = np.repeat(labels[None], rows, 0)
    images = rng.uniform(0.0, 1.0, (rows, size, size, 3)).astype(np.float32)
    images[..., 0] += (labels == 1) * 0.6
    images[..., 1] += (labels == 2) * 0.6
    return images, labels


def unet(path: Path, size: int = 32, width: int = 4) -> Path:
    """A small U-Net: per-pixel softmax over 3 classes ``[B, size, size, 3]``, SpatialDropout2D before the bottleneck
    and the head, Dropout in the bottleneck, skip concatenations; briefly fitted on ``segmentation_scenes``."""
    keras.utils.set_random_seed(11)
    layers = keras.layers

    def block(x: object, filters: int) -> object:
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        return layers.Conv2D(filters, 3, padding="same", activation="relu")(x)

    inputs = keras.Input((size, size, 3), name="image")
    c1 = block(inputs, width)
    c2 = block(layers.MaxPooling2D()(c1), 2 * width)
    c2 = layers.SpatialDropout2D(0.2, name="spatial_dropout")(c2)
    b = layers.Dropout(0.3, name="bottleneck_dropout")(block(layers.MaxPooling2D()(c2), 4 * width))
    u2 = block(layers.Concatenate()([layers.UpSampling2D()(b), c2]), 2 * width)
    u1 = block(layers.Concatenate()([layers.UpSampling2D()(u2), c1]), width)
    u1 = layers.SpatialDropout2D(0.1, name="head_dropout")(u1)
    model = keras.Model(inputs, layers.Conv2D(3, 1, activation="softmax", name="classes")(u1))
    images, labels = segmentation_scenes(96, size, seed=0)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=8, batch_size=16, verbose=0)
    return _save(model, path)
