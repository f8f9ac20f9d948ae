"""Keras 3 dropout architectures: an MLP and a small CNN, with per-layer dropout rates.

Standardisation is part of the model (a fixed ``Normalization`` layer on the
inputs and, for regression, an inverted one on the outputs), so a saved model
and every graph exported from it take raw features and return original units.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from mcdrop.pipeline.training.config import TrainConfig
from mcdrop.pipeline.training.data import Dataset, standardisation
from mcdrop.pipeline.training.tabular import NUMERIC_INPUT, Head, embedding_width
from mcdrop.serving.errors import InvalidArgument


def build_models(config: TrainConfig, dataset: Dataset) -> tuple[keras.Model, keras.Model]:
    """Build the model to save and the one to fit (they share every layer).

    For classification both are the same softmax model. For regression the
    fitted model stops before the output de-standardisation, so the loss is
    computed on standardised targets; the saved model adds that last layer.

    Returns:
        ``(model, trainable)``.
    """
    if dataset.several_inputs_or_outputs:
        return build_wide_and_deep(config, dataset)
    x = dataset.x_train
    inputs = keras.Input(shape=x.shape[1:], name="features", dtype="float32")
    x_mean, x_std = standardisation(x)
    axis: int | tuple[int, ...] = -1 if x.ndim == 2 else tuple(range(1, x.ndim))
    h = keras.layers.Normalization(axis=axis, mean=x_mean, variance=np.square(x_std), name="standardise")(inputs)
    if config.input_dropout > 0:
        h = keras.layers.Dropout(config.input_dropout, name="input_dropout")(h)
    if config.architecture == "cnn":
        h = _conv_blocks(h, config, dataset)
    if len(h.shape) > 2:
        h = keras.layers.Flatten(name="flatten")(h)
    for i, (units, rate) in enumerate(zip(config.hidden, config.dropout, strict=True), start=1):
        h = keras.layers.Dense(units, activation="relu", name=f"dense_{i}", **_weight_options(config, 0))(h)
        if rate > 0:
            h = keras.layers.Dropout(rate, name=f"dropout_{i}")(h)
    if dataset.task == "classification":
        outputs = keras.layers.Dense(
            dataset.num_outputs, activation="softmax", name="probabilities", **_weight_options(config, 0)
        )(h)
        model = keras.Model(inputs, outputs, name="mcdrop_classifier")
        return model, model
    scaled = keras.layers.Dense(dataset.num_outputs, name="standardised_output", **_weight_options(config, 0))(h)
    y_mean, y_std = standardisation(dataset.y_train.reshape(len(dataset.y_train), -1))
    outputs = keras.layers.Normalization(mean=y_mean, variance=np.square(y_std), invert=True, name="destandardise")(
        scaled
    )
    return keras.Model(inputs, outputs, name="mcdrop_regressor"), keras.Model(inputs, scaled, name="trainable")


def build_wide_and_deep(config: TrainConfig, dataset: Dataset) -> tuple[keras.Model, keras.Model]:
    """A Wide & Deep model (Cheng et al. 2016) with MC dropout in its deep part.

    Inputs: ``numeric`` (the numeric columns, standardised in the model) and one int32 input of codes per
    categorical column. The deep part concatenates the numeric features and one embedding per categorical column,
    then runs the hidden layers, each followed by its dropout; the wide part is linear in the numeric features and
    in the categories (one learnt weight vector per category, as an embedding as wide as the head). Each head
    (one per target, or the one target) adds both; classification heads end in a softmax, regression heads
    de-standardise their targets in the saved model (the fitted one stops before, like ``build_models``).
    """
    if config.architecture != "mlp":
        raise InvalidArgument(
            f"Categorical columns and several heads need the MLP architecture. Received architecture="
            f"{config.architecture!r}."
        )
    inputs: dict[str, Any] = {}
    deep: list[Any] = []
    wide_inputs: list[tuple[str, Any, int | None]] = []  # (name, tensor, codes or None for numeric)
    if dataset.has_numeric:
        x_mean, x_std = standardisation(dataset.x_train)
        numeric = inputs[NUMERIC_INPUT] = keras.Input((dataset.x_train.shape[1],), name=NUMERIC_INPUT)
        standardised = keras.layers.Normalization(mean=x_mean, variance=np.square(x_std), name="standardise")(numeric)
        deep.append(standardised)
        wide_inputs.append((NUMERIC_INPUT, standardised, None))
    for column in dataset.categorical:
        codes = inputs[column.name] = keras.Input((1,), name=column.name, dtype="int32")
        width = embedding_width(column.codes)
        embedded = keras.layers.Embedding(column.codes, width, name=f"embed_{column.name}")(codes)
        deep.append(keras.layers.Flatten(name=f"flat_{column.name}")(embedded))
        wide_inputs.append((column.name, codes, column.codes))
    h = deep[0] if len(deep) == 1 else keras.layers.Concatenate(name="deep_features")(deep)
    if config.input_dropout > 0:
        h = keras.layers.Dropout(config.input_dropout, name="input_dropout")(h)
    for i, (units, rate) in enumerate(zip(config.hidden, config.dropout, strict=True), start=1):
        h = keras.layers.Dense(units, activation="relu", name=f"dense_{i}", **_weight_options(config, 0))(h)
        if rate > 0:
            h = keras.layers.Dropout(rate, name=f"dropout_{i}")(h)
    heads = dataset.heads or [Head("y", dataset.task, dataset.y_train, dataset.y_val, dataset.target_names,
                                   dataset.class_labels)]  # fmt: skip
    saved, fitted = {}, {}
    for head in heads:
        prefix = "" if not dataset.heads else f"{head.name}_"
        terms = [keras.layers.Dense(head.num_outputs, name=f"{prefix}deep", **_weight_options(config, 0))(h)]
        for name, tensor, codes in wide_inputs:
            if codes is None:
                terms.append(keras.layers.Dense(head.num_outputs, name=f"{prefix}wide_{name}")(tensor))
            else:
                weights = keras.layers.Embedding(codes, head.num_outputs, name=f"{prefix}wide_{name}")(tensor)
                terms.append(keras.layers.Flatten(name=f"{prefix}wide_flat_{name}")(weights))
        logits = terms[0] if len(terms) == 1 else keras.layers.Add(name=f"{prefix}wide_and_deep")(terms)
        output_name = head.name if dataset.heads else ("probabilities" if head.task == "classification" else
                                                       "destandardise")  # fmt: skip
        if head.task == "classification":
            saved[head.name] = fitted[head.name] = keras.layers.Softmax(name=output_name)(logits)
        else:
            y_mean, y_std = standardisation(head.y_train.reshape(len(head.y_train), -1))
            fitted[head.name] = logits
            saved[head.name] = keras.layers.Normalization(mean=y_mean, variance=np.square(y_std), invert=True,
                                                          name=output_name)(logits)  # fmt: skip
    if not dataset.heads:  # one output: the model returns it as it is, as every single-output model does
        (only,) = heads
        return (keras.Model(inputs, saved[only.name], name="mcdrop_wide_and_deep"),
                keras.Model(inputs, fitted[only.name], name="trainable"))  # fmt: skip
    return keras.Model(inputs, saved, name="mcdrop_wide_and_deep"), keras.Model(inputs, fitted, name="trainable")


def _conv_blocks(h: Any, config: TrainConfig, dataset: Dataset) -> Any:
    """Conv-ReLU-MaxPool blocks, each followed by its dropout layer."""
    image_shape = list(config.image_shape or dataset.image_shape or [])
    if len(h.shape) == 2:
        if not image_shape:
            raise InvalidArgument(
                f"The CNN needs images, but {dataset.name} has flat rows of {h.shape[1]} features. "
                "Expected --image-shape HEIGHT,WIDTH[,CHANNELS]."
            )
        if len(image_shape) == 2:
            image_shape.append(1)
        if int(np.prod(image_shape)) != h.shape[1]:
            raise InvalidArgument(
                f"--image-shape {','.join(map(str, image_shape))} holds {int(np.prod(image_shape))} values. "
                f"Expected one that holds the {h.shape[1]} features of {dataset.name}."
            )
        h = keras.layers.Reshape(tuple(image_shape), name="to_image")(h)
    elif len(h.shape) == 3:
        h = keras.layers.Reshape((*h.shape[1:], 1), name="to_image")(h)
    dropout_layer = keras.layers.SpatialDropout2D if config.conv_dropout_type == "spatial" else keras.layers.Dropout
    for i, (filters, rate) in enumerate(zip(config.conv_filters, config.conv_dropout, strict=True), start=1):
        h = keras.layers.Conv2D(
            filters,
            config.kernel_size,
            padding="same",
            activation="relu",
            name=f"conv_{i}",
            **_weight_options(config, [0, 1, 2]),
        )(h)
        if min(h.shape[1], h.shape[2]) >= 2:
            h = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(h)
        if rate > 0:
            h = dropout_layer(rate, name=f"conv_dropout_{i}")(h)
    return h


def _weight_options(config: TrainConfig, fan_in_axis: int | list[int]) -> dict[str, Any]:
    """Kernel constraint and regulariser; max-norm bounds each unit's incoming weight vector."""
    options: dict[str, Any] = {}
    if config.max_norm is not None:
        options["kernel_constraint"] = keras.constraints.MaxNorm(config.max_norm, axis=fan_in_axis)
    if config.l2 > 0:
        options["kernel_regularizer"] = keras.regularizers.L2(config.l2)
    return options


def dropout_layers(model: keras.Model) -> list[tuple[str, str, float]]:
    """``(name, class name, rate)`` of every dropout-family layer in ``model``, in graph order."""
    found = []
    for layer in model.layers:
        if (
            isinstance(layer, (keras.layers.Dropout, keras.layers.SpatialDropout2D))
            or "Dropout" in type(layer).__name__
        ):
            found.append((layer.name, type(layer).__name__, float(layer.rate)))
    return found
