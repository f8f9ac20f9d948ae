"""Version labels (``mcdrop serve --version-labels``), as TensorFlow Serving's clients ask for them."""

from __future__ import annotations

import pytest

from mcdrop.serving.errors import InvalidArgument, NotFound
from mcdrop.serving.runtime.labels import VersionLabels
from mcdrop.serving.server.settings import load_settings


def test_labels_for_every_model_and_one_model_the_latter_winning() -> None:
    labels = VersionLabels.parse(" stable=3, canary=4 ,digits:stable=2,,digits:beta=7")
    assert labels.of("digits") == {"stable": 2, "canary": 4, "beta": 7}
    assert labels.of("diabetes") == {"stable": 3, "canary": 4}
    assert labels.version("diabetes", "canary") == 4
    with pytest.raises(NotFound, match=r"no version label 'beta'.*canary=4, stable=3"):
        labels.version("diabetes", "beta")
    assert VersionLabels.parse("").of("digits") == {}


@pytest.mark.parametrize("text", ["stable", "stable=0", "stable=x", "a b=1", "digits:stable=1,digits:stable=2",
                                  "stable=1,stable=1", ":stable=1"])  # fmt: skip
def test_malformed_labels_are_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(InvalidArgument, match="version_labels"):
        load_settings({"version_labels": text})
