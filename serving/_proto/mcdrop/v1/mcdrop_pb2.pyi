from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    FLOAT32: _ClassVar[DataType]
    FLOAT64: _ClassVar[DataType]
    INT32: _ClassVar[DataType]
    INT64: _ClassVar[DataType]
    UINT8: _ClassVar[DataType]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    DETERMINISTIC: _ClassVar[Mode]
    MONTE_CARLO: _ClassVar[Mode]
    MOMENTS: _ClassVar[Mode]
DATA_TYPE_UNSPECIFIED: DataType
FLOAT32: DataType
FLOAT64: DataType
INT32: DataType
INT64: DataType
UINT8: DataType
MODE_UNSPECIFIED: Mode
DETERMINISTIC: Mode
MONTE_CARLO: Mode
MOMENTS: Mode

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DataType
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DataType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "version", "input", "mode", "samples", "seed", "return_samples", "interval", "tolerance", "max_samples", "chunk", "inputs", "abstain_threshold", "abstain_score", "variant")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RETURN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    input: Tensor
    mode: Mode
    samples: int
    seed: int
    return_samples: bool
    interval: float
    tolerance: float
    max_samples: int
    chunk: int
    inputs: _containers.MessageMap[str, Tensor]
    abstain_threshold: float
    abstain_score: str
    variant: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., input: _Optional[_Union[Tensor, _Mapping]] = ..., mode: _Optional[_Union[Mode, str]] = ..., samples: _Optional[int] = ..., seed: _Optional[int] = ..., return_samples: _Optional[bool] = ..., interval: _Optional[float] = ..., tolerance: _Optional[float] = ..., max_samples: _Optional[int] = ..., chunk: _Optional[int] = ..., inputs: _Optional[_Mapping[str, Tensor]] = ..., abstain_threshold: _Optional[float] = ..., abstain_score: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...

class OutputResult(_message.Message):
    __slots__ = ("name", "task", "classification", "regression", "sample_outputs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: str
    classification: Classification
    regression: Regression
    sample_outputs: Tensor
    def __init__(self, name: _Optional[str] = ..., task: _Optional[str] = ..., classification: _Optional[_Union[Classification, _Mapping]] = ..., regression: _Optional[_Union[Regression, _Mapping]] = ..., sample_outputs: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("mean", "std", "predicted_class", "predicted_label", "predictive_entropy", "expected_entropy", "mutual_information", "variation_ratio", "class_labels", "abstain", "abstain_score", "abstain_score_name", "abstain_threshold", "pixel_shape")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTIVE_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MUTUAL_INFORMATION_FIELD_NUMBER: _ClassVar[int]
    VARIATION_RATIO_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABELS_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_SCORE_NAME_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SHAPE_FIELD_NUMBER: _ClassVar[int]
    mean: Tensor
    std: Tensor
    predicted_class: _containers.RepeatedScalarFieldContainer[int]
    predicted_label: _containers.RepeatedScalarFieldContainer[str]
    predictive_entropy: _containers.RepeatedScalarFieldContainer[float]
    expected_entropy: _containers.RepeatedScalarFieldContainer[float]
    mutual_information: _containers.RepeatedScalarFieldContainer[float]
    variation_ratio: _containers.RepeatedScalarFieldContainer[float]
    class_labels: _containers.RepeatedScalarFieldContainer[str]
    abstain: _containers.RepeatedScalarFieldContainer[bool]
    abstain_score: _containers.RepeatedScalarFieldContainer[float]
    abstain_score_name: str
    abstain_threshold: float
    pixel_shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, mean: _Optional[_Union[Tensor, _Mapping]] = ..., std: _Optional[_Union[Tensor, _Mapping]] = ..., predicted_class: _Optional[_Iterable[int]] = ..., predicted_label: _Optional[_Iterable[str]] = ..., predictive_entropy: _Optional[_Iterable[float]] = ..., expected_entropy: _Optional[_Iterable[float]] = ..., mutual_information: _Optional[_Iterable[float]] = ..., variation_ratio: _Optional[_Iterable[float]] = ..., class_labels: _Optional[_Iterable[str]] = ..., abstain: _Optional[_Iterable[bool]] = ..., abstain_score: _Optional[_Iterable[float]] = ..., abstain_score_name: _Optional[str] = ..., abstain_threshold: _Optional[float] = ..., pixel_shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Regression(_message.Message):
    __slots__ = ("mean", "std", "lower", "upper", "interval", "predictive_std", "mean_lower", "mean_upper", "noise_variance", "interval_calibration")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    PREDICTIVE_STD_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOWER_FIELD_NUMBER: _ClassVar[int]
    MEAN_UPPER_FIELD_NUMBER: _ClassVar[int]
    NOISE_VARIANCE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    mean: Tensor
    std: Tensor
    lower: Tensor
    upper: Tensor
    interval: float
    predictive_std: Tensor
    mean_lower: Tensor
    mean_upper: Tensor
    noise_variance: Tensor
    interval_calibration: str
    def __init__(self, mean: _Optional[_Union[Tensor, _Mapping]] = ..., std: _Optional[_Union[Tensor, _Mapping]] = ..., lower: _Optional[_Union[Tensor, _Mapping]] = ..., upper: _Optional[_Union[Tensor, _Mapping]] = ..., interval: _Optional[float] = ..., predictive_std: _Optional[_Union[Tensor, _Mapping]] = ..., mean_lower: _Optional[_Union[Tensor, _Mapping]] = ..., mean_upper: _Optional[_Union[Tensor, _Mapping]] = ..., noise_variance: _Optional[_Union[Tensor, _Mapping]] = ..., interval_calibration: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "version", "mode", "samples", "seed", "classification", "regression", "sample_outputs", "final", "max_standard_error", "queue_ms", "compute_ms", "outputs", "variant")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    MAX_STANDARD_ERROR_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    mode: Mode
    samples: int
    seed: int
    classification: Classification
    regression: Regression
    sample_outputs: Tensor
    final: bool
    max_standard_error: float
    queue_ms: float
    compute_ms: float
    outputs: _containers.RepeatedCompositeFieldContainer[OutputResult]
    variant: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., mode: _Optional[_Union[Mode, str]] = ..., samples: _Optional[int] = ..., seed: _Optional[int] = ..., classification: _Optional[_Union[Classification, _Mapping]] = ..., regression: _Optional[_Union[Regression, _Mapping]] = ..., sample_outputs: _Optional[_Union[Tensor, _Mapping]] = ..., final: _Optional[bool] = ..., max_standard_error: _Optional[float] = ..., queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., outputs: _Optional[_Iterable[_Union[OutputResult, _Mapping]]] = ..., variant: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "versions", "latest", "task", "failed_versions")
    class FailedVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    FAILED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedScalarFieldContainer[int]
    latest: int
    task: str
    failed_versions: _containers.ScalarMap[int, str]
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[int]] = ..., latest: _Optional[int] = ..., task: _Optional[str] = ..., failed_versions: _Optional[_Mapping[int, str]] = ...) -> None: ...

class GetModelMetadataRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "shape", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DataType
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DataType, str]] = ...) -> None: ...

class DropoutLayer(_message.Message):
    __slots__ = ("name", "layer_class", "rate", "noise_shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LAYER_CLASS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    NOISE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    layer_class: str
    rate: float
    noise_shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., layer_class: _Optional[str] = ..., rate: _Optional[float] = ..., noise_shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("name", "version", "versions", "task", "input", "output", "class_labels", "dropout_layers", "default_samples", "manifest_json", "unsampled_dropout_layers", "mc_layers", "activation_bytes_per_sample_row", "inputs", "outputs", "modes", "calibration", "variants")
    class CalibrationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABELS_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_LAYERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    UNSAMPLED_DROPOUT_LAYERS_FIELD_NUMBER: _ClassVar[int]
    MC_LAYERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BYTES_PER_SAMPLE_ROW_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MODES_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    versions: _containers.RepeatedScalarFieldContainer[int]
    task: str
    input: TensorSpec
    output: TensorSpec
    class_labels: _containers.RepeatedScalarFieldContainer[str]
    dropout_layers: _containers.RepeatedCompositeFieldContainer[DropoutLayer]
    default_samples: int
    manifest_json: str
    unsampled_dropout_layers: _containers.RepeatedCompositeFieldContainer[DropoutLayer]
    mc_layers: str
    activation_bytes_per_sample_row: int
    inputs: _containers.RepeatedCompositeFieldContainer[InputMetadata]
    outputs: _containers.RepeatedCompositeFieldContainer[OutputMetadata]
    modes: _containers.RepeatedScalarFieldContainer[Mode]
    calibration: _containers.ScalarMap[str, str]
    variants: _containers.RepeatedCompositeFieldContainer[VariantMetadata]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., versions: _Optional[_Iterable[int]] = ..., task: _Optional[str] = ..., input: _Optional[_Union[TensorSpec, _Mapping]] = ..., output: _Optional[_Union[TensorSpec, _Mapping]] = ..., class_labels: _Optional[_Iterable[str]] = ..., dropout_layers: _Optional[_Iterable[_Union[DropoutLayer, _Mapping]]] = ..., default_samples: _Optional[int] = ..., manifest_json: _Optional[str] = ..., unsampled_dropout_layers: _Optional[_Iterable[_Union[DropoutLayer, _Mapping]]] = ..., mc_layers: _Optional[str] = ..., activation_bytes_per_sample_row: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[InputMetadata, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[OutputMetadata, _Mapping]]] = ..., modes: _Optional[_Iterable[_Union[Mode, str]]] = ..., calibration: _Optional[_Mapping[str, str]] = ..., variants: _Optional[_Iterable[_Union[VariantMetadata, _Mapping]]] = ...) -> None: ...

class VariantMetadata(_message.Message):
    __slots__ = ("name", "deterministic_bytes", "float_ops", "agreement")
    class AgreementEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_BYTES_FIELD_NUMBER: _ClassVar[int]
    FLOAT_OPS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    deterministic_bytes: int
    float_ops: _containers.RepeatedScalarFieldContainer[str]
    agreement: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., deterministic_bytes: _Optional[int] = ..., float_ops: _Optional[_Iterable[str]] = ..., agreement: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InputMetadata(_message.Message):
    __slots__ = ("tensor", "feature_names", "integer_low", "integer_high", "has_integer_range", "categories")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    INTEGER_LOW_FIELD_NUMBER: _ClassVar[int]
    INTEGER_HIGH_FIELD_NUMBER: _ClassVar[int]
    HAS_INTEGER_RANGE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    tensor: TensorSpec
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    integer_low: int
    integer_high: int
    has_integer_range: bool
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tensor: _Optional[_Union[TensorSpec, _Mapping]] = ..., feature_names: _Optional[_Iterable[str]] = ..., integer_low: _Optional[int] = ..., integer_high: _Optional[int] = ..., has_integer_range: _Optional[bool] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...

class OutputMetadata(_message.Message):
    __slots__ = ("tensor", "task", "class_labels", "target_names", "epistemic_only")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABELS_FIELD_NUMBER: _ClassVar[int]
    TARGET_NAMES_FIELD_NUMBER: _ClassVar[int]
    EPISTEMIC_ONLY_FIELD_NUMBER: _ClassVar[int]
    tensor: TensorSpec
    task: str
    class_labels: _containers.RepeatedScalarFieldContainer[str]
    target_names: _containers.RepeatedScalarFieldContainer[str]
    epistemic_only: bool
    def __init__(self, tensor: _Optional[_Union[TensorSpec, _Mapping]] = ..., task: _Optional[str] = ..., class_labels: _Optional[_Iterable[str]] = ..., target_names: _Optional[_Iterable[str]] = ..., epistemic_only: _Optional[bool] = ...) -> None: ...
