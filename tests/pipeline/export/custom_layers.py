"""A user's own layers, importable by file path (``mcdrop export --import tests/pipeline/export/custom_layers.py``)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mcdrop_tests")
class DropoutBlock(keras.layers.Layer):
    """Dense → BatchNormalization → ReLU → Dropout, as one custom layer: the Dropout is a sublayer."""

    def __init__(self, units: int, rate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units, self.rate = units, rate
        self.dense = keras.layers.Dense(units)
        self.norm = keras.layers.BatchNormalization()
        self.dropout = keras.layers.Dropout(rate)

    def build(self, input_shape: Any) -> None:
        self.dense.build(input_shape)
        self.norm.build((*input_shape[:-1], self.units))

    def call(self, x: Any, training: bool | None = None) -> Any:
        return self.dropout(keras.ops.relu(self.norm(self.dense(x), training=training)), training=training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "rate": self.rate}


@keras.saving.register_keras_serializable(package="mcdrop_tests")
class TensorFlowNoise(keras.layers.Layer):
    """Draws with TensorFlow's own random op: invisible to Keras's random functions."""

    def call(self, x: Any) -> Any:
        return tf.nn.dropout(x, rate=0.5)


@keras.saving.register_keras_serializable(package="mcdrop_tests")
class NoisyDropout(keras.layers.Layer):
    """A Dropout plus additive Keras noise in training mode: the noise is not dropout."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dropout = keras.layers.Dropout(0.2)
        self.seed = keras.random.SeedGenerator(1)

    def call(self, x: Any, training: bool | None = None) -> Any:
        if training:
            x = x + keras.random.normal(keras.ops.shape(x), stddev=0.1, seed=self.seed)
        return self.dropout(x, training=training)


@keras.saving.register_keras_serializable(package="mcdrop_tests")
class TrainingBranch(keras.layers.Layer):
    """Doubles its input in training mode besides its dropout: MC samples would not be dropout samples."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dropout = keras.layers.Dropout(0.2)

    def call(self, x: Any, training: bool | None = None) -> Any:
        return self.dropout(x * 2.0 if training else x, training=training)


def model_with(layer: keras.layers.Layer, path: Any) -> Any:
    keras.utils.set_random_seed(12)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6), layer, keras.layers.Dense(2)])
    norms = [sub for sub in model._flatten_layers() if isinstance(sub, keras.layers.BatchNormalization)]
    for norm in norms:  # moving statistics far from a batch's own: training-mode BatchNorm would show
        norm.moving_mean.assign(keras.ops.ones(norm.moving_mean.shape) * -1.0)
        norm.moving_variance.assign(keras.ops.ones(norm.moving_variance.shape) * 4.0)
    model.save(path)
    return path


@keras.saving.register_keras_serializable(package="mcdrop_tests")
class DropPath(keras.layers.Layer):
    """Stochastic depth as Keras tutorials write it: one keep flag per sample, floor(keep + uniform), scaled."""

    def __init__(self, rate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = rate

    def call(self, x: Any, training: bool | None = None) -> Any:
        if not training:
            return x
        keep = 1.0 - self.rate
        shape = (keras.ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        return x / keep * keras.ops.floor(keep + keras.random.uniform(shape, 0, 1))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate}


@keras.saving.register_keras_serializable(package="mcdrop_tests")
class UnscaledDropPath(DropPath):
    """Drops whole samples but forgets the 1/keep scale: not inverted dropout, so not recognised."""

    def call(self, x: Any, training: bool | None = None) -> Any:
        if not training:
            return x
        shape = (keras.ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        return x * keras.ops.floor(1.0 - self.rate + keras.random.uniform(shape, 0, 1))


@keras.saving.register_keras_serializable(package="mcdrop_tests")
class ResidualBlock(keras.layers.Layer):
    """x + DropPath(Dense(x)) as one custom layer: the stochastic depth is a sublayer."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(6)
        self.drop_path = DropPath(0.2, name="drop_path")

    def build(self, input_shape: Any) -> None:
        self.dense.build(input_shape)

    def call(self, x: Any, training: bool | None = None) -> Any:
        return x + self.drop_path(self.dense(x), training=training)
