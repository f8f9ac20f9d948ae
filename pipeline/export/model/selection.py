"""``--mc-layers``: which dropout sites stay stochastic in the Monte-Carlo graphs.

* ``all`` (default): every site.
* ``last``: the sites nearest the output — those of owners (the layers that apply dropout) whose output
  reaches no other owner ("last-layer MC dropout": the backbone runs once per input, deterministically).
* ``NAME[,NAME…]``: sites by name (``lstm/recurrent``), by the path of the layer that applies them, or by the
  path of their owner, as printed in the export's site table.

The others run as in inference. Sites applied by one owner are sampled together or not at all: the
owner runs either in training mode (all its dropout on) or in inference mode.
"""

from __future__ import annotations

import dataclasses

from mcdrop.pipeline.export.model.sites import DropoutSite
from mcdrop.serving.errors import InvalidArgument

ALL, LAST = "all", "last"


@dataclasses.dataclass(frozen=True)
class Selection:
    """The sampled and the unsampled sites of a model, and how they were chosen."""

    spec: str
    sampled: list[DropoutSite]
    unsampled: list[DropoutSite]


def parse(text: str) -> str:
    """Normalise an ``--mc-layers`` value (``all``, ``last`` or names); raise on an empty one."""
    value = ",".join(part.strip() for part in text.split(",") if part.strip())
    if not value:
        raise InvalidArgument(f"Invalid --mc-layers. Expected all, last or NAME[,NAME...]. Received: {text!r}")
    return value


def select(spec: str, sites: list[DropoutSite], upstream: dict[str, set[str]]) -> Selection:
    """Split ``sites`` by ``spec``; ``upstream`` maps each owner to the owners whose output reaches it.

    Raises:
        InvalidArgument: a name matches no site, a name splits one owner's sites, or nothing would be sampled.
    """
    spec = parse(spec)
    if spec == ALL or not sites:
        return Selection(spec, list(sites), [])
    if spec == LAST:
        feeding = set().union(*upstream.values()) if upstream else set()
        owners = {site.owner for site in sites} - feeding
    else:
        owners = set()
        for name in spec.split(","):
            matched = {site.owner for site in sites if name in (site.name, site.layer, site.owner)}
            if not matched:
                known = ", ".join(sorted({site.name for site in sites}))
                raise InvalidArgument(
                    f"--mc-layers names {name!r}, which is no dropout site. Expected any of: {known}."
                )
            partial = [s.name for s in sites if s.owner in matched and name not in (s.name, s.layer, s.owner)]
            if partial and name not in {site.owner for site in sites}:
                raise InvalidArgument(
                    f"--mc-layers names {name!r}, but its layer also applies {partial}: a layer's dropout is sampled "
                    f"all together or not at all. Expected the layer's name ({sorted(matched)[0]!r})."
                )
            owners |= matched
    sampled = [site for site in sites if site.owner in owners]
    if not sampled:
        raise InvalidArgument(f"--mc-layers {spec!r} leaves no dropout site sampled. Expected at least one.")
    return Selection(spec, sampled, [site for site in sites if site.owner not in owners])
