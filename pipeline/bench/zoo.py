"""Real-size vision models as people ship them: ``keras.applications`` backbones with dropout, built offline.

``build(family, size)`` returns a Keras model of one of ``FAMILIES`` at ``size`` x ``size`` x 3 px with
random weights (``weights=None``: ImageNet weights would need a download). An untrained backbone is
degenerate — an untrained EfficientNetB0 answers 0.1 ± 1e-6 for every class, so every MC sample is the
same to float precision and mcdrop's ``fresh_randomness`` check rightly refuses the export — because
its BatchNormalization layers hold their initial statistics (mean 0, variance 1) and the activations
shrink or blow up block after block. ``build`` therefore *calibrates* every BatchNormalization layer on
images (one training-mode pass with momentum 0: each layer's moving statistics become those of its actual
input), which keeps every layer's activations at unit scale, as a trained network's are, then *fits the
classifier* on a small task it can learn from those features (``labelled_scenes``: which of five colour palettes
an image is painted in), so that the model is confident where it has seen data and margins are a trained
model's, not near-ties that any rounding flips; and checks that dropout moves the output. Inputs are
preprocessed as each family expects (``PIXELS``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

FAMILIES = ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "resnet50", "convnext_tiny")
CLASSES = 5
"""Output classes of every zoo model (a small fine-tuning task's head)."""
HEAD_DROPOUT = {"mobilenet_v2": 0.2, "mobilenet_v3_small": 0.2, "efficientnet_b0": 0.2, "resnet50": 0.5,
                "convnext_tiny": 0.2}  # fmt: skip
DROP_PATH_RATE = 0.1
"""ConvNeXt-Tiny's stochastic depth (Keras's ``drop_path_rate``, the rate of the last block; earlier ones less)."""
CALIBRATION_ROWS = 8
PIXELS = {"mobilenet_v2": "tf", "mobilenet_v3_small": "tf", "efficientnet_b0": "raw", "resnet50": "caffe",
          "convnext_tiny": "raw"}  # fmt: skip
"""How each family's model expects its pixels (``keras.applications``' ``preprocess_input`` modes): ``tf`` scales
0..255 to -1..1 (MobileNets built without their own preprocessing), ``caffe`` flips RGB to BGR and subtracts
ImageNet's channel means (ResNet50), ``raw`` leaves 0..255 (EfficientNet and ConvNeXt normalise inside the model)."""
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def build(family: str, size: int, seed: int = 0) -> Any:
    with warnings.catch_warnings():
        # Keras warns that a nested model (the backbone) is called on a tensor rather than a list of one.
        warnings.filterwarnings("ignore", "The structure of `inputs` doesn't match", UserWarning)
        return _build(family, size, seed)


def _build(family: str, size: int, seed: int) -> Any:
    """A ``family`` model at ``size`` px with calibrated BatchNormalization and random weights.

    Raises:
        ValueError: unknown family, or the model came out degenerate (dropout does not move its output).
    """
    import keras

    if family not in FAMILIES:
        raise ValueError(f"Unknown model family {family!r}. Expected one of {', '.join(FAMILIES)}.")
    keras.utils.set_random_seed(seed)
    shape = (size, size, 3)
    apps = keras.applications
    rate = HEAD_DROPOUT[family]
    if family == "mobilenet_v3_small":
        model = apps.MobileNetV3Small(
            input_shape=shape, weights=None, classes=CLASSES, dropout_rate=rate, include_preprocessing=False
        )
    elif family == "efficientnet_b0":
        # Keras's EfficientNet has a Dropout(noise_shape=(None, 1, 1, 1)) in most blocks (stochastic depth,
        # drop_connect_rate 0.2) and a Dropout(0.2) before its classifier.
        model = apps.EfficientNetB0(input_shape=shape, weights=None, classes=CLASSES)
    else:
        if family == "convnext_tiny":
            # keras.applications.ConvNeXtTiny fixes drop_path_rate at 0; the general constructor takes it.
            from keras.src.applications.convnext import MODEL_CONFIGS, ConvNeXt

            tiny = MODEL_CONFIGS["tiny"]
            backbone = ConvNeXt(depths=tiny["depths"], projection_dims=tiny["projection_dims"],
                                drop_path_rate=DROP_PATH_RATE, include_top=False, weights=None, input_shape=shape,
                                name="convnext_tiny")  # fmt: skip
        else:
            backbone_class = apps.MobileNetV2 if family == "mobilenet_v2" else apps.ResNet50
            backbone = backbone_class(include_top=False, weights=None, input_shape=shape)
        # The Keras transfer-learning recipe: backbone, pooling, dropout, a new dense head.
        inputs = keras.Input(shape)
        h = backbone(inputs)
        h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
        h = keras.layers.Dropout(rate, name="head_dropout")(h)
        outputs = keras.layers.Dense(CLASSES, activation="softmax", name="predictions")(h)
        model = keras.Model(inputs, outputs, name=f"{family}_classifier")
    calibration = pixels(family, CALIBRATION_ROWS, size, seed + 1)
    calibrate_batch_norm(model, calibration)
    fit_head(model, family, size, seed + 3)
    _check_not_degenerate(model, family, pixels(family, 2, size, seed + 2))
    return model


def images(rows: int, size: int, seed: int = 0) -> np.ndarray:
    """Random images in [0, 255] (what a camera gives; the models' own preprocessing, if any, rescales)."""
    return np.random.default_rng(seed).uniform(0.0, 255.0, (rows, size, size, 3)).astype(np.float32)


PALETTES = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [128, 128, 128]], np.float32)
"""The five classes of ``labelled_scenes``: the colour an image's blocks are drawn around."""


def labelled_scenes(rows: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 255] with a photo's large smooth regions — 8 x 8 blocks of colour around one of ``PALETTES``,
    each pixel moved by a little noise — and their class (the palette). Uniform noise over the same range is out
    of their distribution, as it is for a real model."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(PALETTES), rows)
    cells = -(-size // 8)
    colours = PALETTES[labels][:, None, None, :] + rng.uniform(-70.0, 70.0, (rows, 8, 8, 3))
    blocks = np.repeat(np.repeat(colours, cells, axis=1), cells, axis=2)
    noisy = blocks[:, :size, :size] + rng.normal(0.0, 12.0, (rows, size, size, 3))
    return np.clip(noisy, 0.0, 255.0).astype(np.float32), labels


def scenes(rows: int, size: int, seed: int = 0) -> np.ndarray:
    """The images of ``labelled_scenes``."""
    return labelled_scenes(rows, size, seed)[0]


def preprocess(family: str, rgb: np.ndarray) -> np.ndarray:
    """``rgb`` (0..255) as ``family``'s model takes it (``PIXELS``)."""
    mode = PIXELS[family]
    if mode == "tf":
        return (rgb / 127.5 - 1.0).astype(np.float32)
    if mode == "caffe":
        return (rgb[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, np.float32)).astype(np.float32)
    return rgb.astype(np.float32)


def pixels(family: str, rows: int, size: int, seed: int = 0) -> np.ndarray:
    """``scenes`` preprocessed for ``family``: the rows a user of that model would verify, calibrate and serve on."""
    return preprocess(family, scenes(rows, size, seed))


def calibrate_batch_norm(model: Any, x: np.ndarray) -> None:
    """Set every BatchNormalization layer's moving statistics to those of its input on ``x`` (one pass)."""
    import keras

    from mcdrop.pipeline.export.model import keras_internals

    layers = [layer for layer in keras_internals.sublayers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


LOGIT_SPREAD = 2.5
"""Standard deviation of the logits across classes after ``fit_head``: a confident but unsaturated softmax."""
HEAD_ROWS = 256


def fit_head(model: Any, family: str, size: int, seed: int) -> None:
    """Fit the classifier's last layer (a logistic regression on its input features) to ``labelled_scenes``, then
    scale its logits to spread by ``LOGIT_SPREAD``.

    A randomly initialised head on unit-scale features of 1,280-2,048 channels gives logits hundreds apart: a
    softmax saturated to exactly 0 and 1, where dropout cannot move the output; a head scaled down instead leaves
    every class nearly tied, where any rounding changes the answer — unlike a trained model's.
    """
    import keras
    from sklearn.linear_model import LogisticRegression

    images_rgb, labels = labelled_scenes(HEAD_ROWS, size, seed)
    x = preprocess(family, images_rgb)
    head = [layer for layer in model.layers if getattr(layer, "kernel", None) is not None][-1]
    extractor = keras.Model(model.inputs, head.input)
    features = np.concatenate([np.asarray(extractor(x[i : i + 16])).reshape(len(x[i : i + 16]), -1)
                               for i in range(0, len(x), 16)])  # fmt: skip
    fitted = LogisticRegression(max_iter=2000).fit(features, labels)
    kernel = fitted.coef_.T.astype(np.float32)
    bias = fitted.intercept_.astype(np.float32)
    logits = features @ kernel + bias
    scale = LOGIT_SPREAD / max(float(logits.std(axis=1).mean()), 1e-12)
    head.kernel.assign((kernel * scale).reshape(tuple(head.kernel.shape)))
    if getattr(head, "bias", None) is not None:
        head.bias.assign(bias * scale)


def _check_not_degenerate(model: Any, family: str, x: np.ndarray) -> None:
    samples = np.stack([np.asarray(model(x, training=True)) for _ in range(4)])
    spread = float(samples.std(axis=0).max())
    if spread < 1e-4:
        raise ValueError(
            f"{family}: dropout moves the output by at most {spread:.2g} (degenerate backbone). Expected > 1e-4."
        )
