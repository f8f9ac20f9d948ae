"""Training configuration: one dataclass, loaded from TOML and overridden by flags.

Precedence, lowest first: the defaults below, a TOML file (``--config``), then
command-line flags. TOML keys are the field names (``hidden = [256, 256]``).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from mcdrop.serving.errors import InvalidArgument, NotFound

Task = Literal["auto", "classification", "regression"]
Architecture = Literal["mlp", "cnn"]
ConvDropout = Literal["spatial", "standard"]


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a training run; saved verbatim in training.json."""

    out: str = ""
    """Output directory for model.keras and training.json."""
    dataset: str = "digits"
    """``digits``, ``diabetes``, ``csv:PATH`` or ``npz:PATH`` (arrays ``x`` and ``y``)."""
    target: list[str] = dataclasses.field(default_factory=list)
    """CSV target column(s); several columns make a vector regression."""
    categorical: list[str] = dataclasses.field(default_factory=list)
    """CSV columns holding categories: one embedding input each (a Wide & Deep model with a numeric input)."""
    task: Task = "auto"
    """``classification``, ``regression``, or ``auto`` (decided from the target)."""
    architecture: Architecture = "mlp"
    hidden: list[int] = dataclasses.field(default_factory=lambda: [256, 256])
    """Units of each hidden dense layer (MLP) or of the dense head (CNN)."""
    dropout: list[float] = dataclasses.field(default_factory=lambda: [0.2, 0.5])
    """Dropout rate after each hidden dense layer: one rate per layer, or one for all."""
    input_dropout: float = 0.0
    """Dropout rate on the inputs (0 means no layer)."""
    conv_filters: list[int] = dataclasses.field(default_factory=lambda: [16, 32])
    """Filters of each Conv-ReLU-MaxPool block (CNN only)."""
    conv_dropout: list[float] = dataclasses.field(default_factory=lambda: [0.1])
    """Dropout rate after each conv block: one per block, or one for all."""
    conv_dropout_type: ConvDropout = "spatial"
    """``spatial`` drops whole channels (SpatialDropout2D); ``standard`` drops units."""
    kernel_size: int = 3
    image_shape: list[int] = dataclasses.field(default_factory=list)
    """Height, width[, channels] to reshape flat rows into for the CNN."""
    max_norm: float | None = None
    """Max-norm constraint on each unit's incoming weight vector (Srivastava et al. use 3-4)."""
    l2: float = 0.0
    """L2 weight-decay coefficient on kernels."""
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 1e-3
    val_fraction: float = 0.2
    seed: int = 0
    patience: int | None = None
    """Stop early after this many epochs without validation improvement (best weights kept)."""
    quiet: bool = False

    def validate(self) -> TrainConfig:
        """Check every field; raise InvalidArgument saying what was expected and received."""
        if not self.out:
            raise InvalidArgument("Missing output directory. Expected --out DIR (or `out` in the config file).")
        _check_choice("task", self.task, Task)
        _check_choice("architecture", self.architecture, Architecture)
        _check_choice("conv_dropout_type", self.conv_dropout_type, ConvDropout)
        _check_positive_ints("hidden", self.hidden, allow_empty=True)
        _check_rate("input_dropout", self.input_dropout)
        for rate in self.dropout:
            _check_rate("dropout", rate)
        for rate in self.conv_dropout:
            _check_rate("conv_dropout", rate)
        self.dropout = _broadcast_rates("dropout", self.dropout, len(self.hidden), "hidden")
        if self.architecture == "cnn":
            _check_positive_ints("conv_filters", self.conv_filters, allow_empty=False)
            self.conv_dropout = _broadcast_rates(
                "conv_dropout", self.conv_dropout, len(self.conv_filters), "conv_filters"
            )
            if self.image_shape and len(self.image_shape) not in (2, 3):
                raise InvalidArgument(
                    "Invalid value received for argument `image_shape`. Expected height,width "
                    f"or height,width,channels. Received: image_shape={self.image_shape}"
                )
            _check_positive_ints("image_shape", self.image_shape, allow_empty=True)
        if self.max_norm is not None and not (self.max_norm > 0 and math.isfinite(self.max_norm)):
            raise _invalid("max_norm", "a positive finite number", self.max_norm)
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise _invalid("l2", "a finite number >= 0", self.l2)
        for name in ("epochs", "batch_size", "kernel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _invalid(name, "an integer >= 1", value)
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise _invalid("patience", "an integer >= 1", self.patience)
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise _invalid("learning_rate", "a positive finite number", self.learning_rate)
        if not 0 < self.val_fraction < 1:
            raise _invalid("val_fraction", "a float strictly between 0 and 1", self.val_fraction)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise _invalid("seed", "an integer >= 0", self.seed)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainConfig))


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Build a validated config: defaults, then the TOML file at ``path``, then ``overrides``.

    Raises:
        NotFound: the config file does not exist.
        InvalidArgument: the file is not valid TOML, has unknown keys, or a value is invalid.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_toml(path, section="train"))
    values.update(overrides)
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise InvalidArgument(
            f"Unknown training setting(s) {', '.join(unknown)}. Expected any of: {', '.join(FIELD_NAMES)}."
        )
    return TrainConfig(**values).validate()


def read_toml(path: str | Path, section: str | None = None) -> dict[str, Any]:
    """Read a TOML file; if ``section`` is a table in it, return that table, else the whole file."""
    file = Path(path)
    if not file.is_file():
        raise NotFound(f"Config file not found: {file}")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"Config file {file} is not valid TOML: {exc}") from None
    if section is not None and isinstance(data.get(section), dict):
        return dict(data[section])
    return data


def parse_int_list(text: str) -> list[int]:
    """Parse ``"256,256"`` into ``[256, 256]``; an empty string gives ``[]``."""
    try:
        return [int(part) for part in _split(text)]
    except ValueError:
        raise InvalidArgument(f"Expected comma-separated integers. Received: {text!r}") from None


def parse_float_list(text: str) -> list[float]:
    """Parse ``"0.2,0.5"`` into ``[0.2, 0.5]``; an empty string gives ``[]``."""
    try:
        return [float(part) for part in _split(text)]
    except ValueError:
        raise InvalidArgument(f"Expected comma-separated numbers. Received: {text!r}") from None


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _invalid(name: str, expected: str, received: object) -> InvalidArgument:
    return InvalidArgument(
        f"Invalid value received for argument `{name}`. Expected {expected}. Received: {name}={received!r}"
    )


def _check_rate(name: str, rate: float) -> None:
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate < 1:
        raise _invalid(name, "a dropout rate in [0, 1)", rate)


def _check_choice(name: str, value: object, choices: Any) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise _invalid(name, "one of " + ", ".join(allowed), value)


def _check_positive_ints(name: str, values: list[int], *, allow_empty: bool) -> None:
    if not allow_empty and not values:
        raise _invalid(name, "at least one positive integer", values)
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _invalid(name, "positive integers", values)


def _broadcast_rates(name: str, rates: list[float], layers: int, layer_name: str) -> list[float]:
    """One rate per layer, or a single rate applied to every layer."""
    if len(rates) == layers:
        return list(rates)
    if len(rates) == 1:
        return list(rates) * layers
    if not rates:
        return [0.0] * layers
    raise InvalidArgument(
        f"Invalid value received for argument `{name}`. Expected 1 or {layers} rate(s), one per "
        f"`{layer_name}` layer. Received: {name}={rates}"
    )
