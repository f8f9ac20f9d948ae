from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcdrop.pipeline.training.data import load_dataset
from mcdrop.serving.errors import InvalidArgument, NotFound


def load(spec: str, **kwargs: object) -> object:
    options: dict[str, object] = {"task": "auto", "target": [], "val_fraction": 0.25, "seed": 0}
    options.update(kwargs)
    return load_dataset(spec, **options)  # type: ignore[arg-type]


def write_csv(path: Path, rows: list[str]) -> str:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return f"csv:{path}"


def test_bundled_datasets() -> None:
    digits = load("digits")
    assert digits.task == "classification" and digits.class_labels == [str(i) for i in range(10)]
    assert digits.x_train.shape[1] == 64 and len(digits.x_train) + len(digits.x_val) == 1797
    diabetes = load("diabetes")
    assert diabetes.task == "regression" and diabetes.class_labels is None


def test_statistics_come_from_the_training_split_only() -> None:
    data = load("diabetes")
    stats = data.statistics()
    np.testing.assert_allclose(stats["x_mean"], data.x_train.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(stats["x_mean"], np.concatenate([data.x_train, data.x_val]).mean(axis=0), atol=1e-7)
    assert stats["n_train"] == len(data.x_train)


def test_csv_labels_and_regression(tmp_path: Path) -> None:
    spec = write_csv(tmp_path / "d.csv", ["a,b,kind", *[f"{i},{i % 3},{'cat' if i % 2 else 'dog'}" for i in range(20)]])
    data = load(spec, target=["kind"])
    assert data.task == "classification" and data.class_labels == ["cat", "dog"]
    spec = write_csv(tmp_path / "r.csv", ["a,b,y", *[f"{i},{i % 3},{i * 0.37}" for i in range(20)]])
    data = load(spec, target=["y"])
    assert data.task == "regression" and data.feature_names == ["a", "b"]


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="Data file not found"):
        load(f"csv:{tmp_path / 'missing.csv'}", target=["y"])


def test_wrong_column_lists_the_available_ones(tmp_path: Path) -> None:
    spec = write_csv(tmp_path / "d.csv", ["a,b,y", "1,2,3", "4,5,6"])
    with pytest.raises(NotFound, match=r"Target column 'label' not found .* Available columns: a, b, y"):
        load(spec, target=["label"])


def test_non_numeric_feature_names_row_and_column(tmp_path: Path) -> None:
    spec = write_csv(tmp_path / "d.csv", ["a,b,y", "1,2,3", "4,oops,6", "7,8,9"])
    with pytest.raises(InvalidArgument, match=r"Non-numeric value 'oops' in column 'b', row 3"):
        load(spec, target=["y"])


@pytest.mark.parametrize("cell", ["", "nan", "NaN"])
def test_nan_is_rejected(tmp_path: Path, cell: str) -> None:
    spec = write_csv(tmp_path / "d.csv", ["a,b,y", "1,2,3", f"4,{cell},6", "7,8,9"])
    with pytest.raises(InvalidArgument, match=r"NaN\) in column 'b', row 3"):
        load(spec, target=["y"])


def test_npz_checks(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, features=np.zeros((4, 2)))
    with pytest.raises(InvalidArgument, match="Expected arrays named x and y"):
        load(f"npz:{path}")
    x = np.ones((10, 3), np.float32)
    x[2, 1] = np.nan
    np.savez(path, x=x, y=np.arange(10.0))
    with pytest.raises(InvalidArgument, match=r"NaN/Inf value\(s\) \(first at index \(2, 1\)\)"):
        load(f"npz:{path}")


def test_unknown_dataset_spec() -> None:
    with pytest.raises(InvalidArgument, match="Expected digits, diabetes, csv:PATH or npz:PATH"):
        load("mnist")
