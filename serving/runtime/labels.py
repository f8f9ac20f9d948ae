"""Version labels: names such as ``stable`` or ``canary`` for model versions, as TensorFlow Serving's clients ask
for them (``ModelSpec.version_label``, ``/v1/models/NAME/labels/LABEL``).

Set with ``mcdrop serve --version-labels stable=3,canary=4`` (every model) or ``digits:stable=3`` (one model; it
wins over an unqualified label of the same name).
"""

from __future__ import annotations

import dataclasses
import re

from mcdrop.serving.errors import InvalidArgument, NotFound

__all__ = ["VersionLabels"]

_ENTRY = re.compile(r"^(?:(?P<model>[A-Za-z0-9._-]{1,128}):)?(?P<label>[A-Za-z0-9._-]{1,64})=(?P<version>[1-9][0-9]*)$")
EVERY_MODEL = ""


@dataclasses.dataclass(frozen=True)
class VersionLabels:
    """Label → version, per model (``EVERY_MODEL`` for labels of every model)."""

    labels: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    @staticmethod
    def parse(text: str) -> VersionLabels:
        """``[MODEL:]LABEL=VERSION`` entries, comma-separated.

        Raises:
            InvalidArgument: an entry does not parse, or one label is given twice for one model.
        """
        labels: dict[str, dict[str, int]] = {}
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            match = _ENTRY.match(entry)
            if match is None:
                raise InvalidArgument(
                    "Invalid setting version_labels (--version-labels / MCDROP_VERSION_LABELS). Expected "
                    "[MODEL:]LABEL=VERSION entries, comma-separated (e.g. stable=3,digits:canary=4). "
                    f"Received: {entry!r}"
                )
            model, label = match["model"] or EVERY_MODEL, match["label"]
            if label in labels.setdefault(model, {}):
                raise InvalidArgument(f"Invalid setting version_labels: label {label!r} is given twice"
                                      f"{' for model ' + repr(model) if model else ''}. Expected it once.")  # fmt: skip
            labels[model][label] = int(match["version"])
        return VersionLabels(labels)

    def of(self, model: str) -> dict[str, int]:
        """Every label of ``model`` and its version."""
        return {**self.labels.get(EVERY_MODEL, {}), **self.labels.get(model, {})}

    def version(self, model: str, label: str) -> int:
        """The version ``label`` names for ``model``.

        Raises:
            NotFound: the label is not set for this model.
        """
        known = self.of(model)
        if label not in known:
            listed = ", ".join(f"{name}={version}" for name, version in sorted(known.items())) or "none"
            raise NotFound(f"Model {model!r} has no version label {label!r}. Expected one of its labels: {listed} "
                           "(mcdrop serve --version-labels [MODEL:]LABEL=VERSION).")  # fmt: skip
        return known[label]
