"""``--mc-layers``: which dropout sites are sampled, from names or the data flow; what is refused."""

from __future__ import annotations

import pytest

pytest.importorskip("keras")

from mcdrop.pipeline.export.model import selection
from mcdrop.pipeline.export.model.sites import DropoutSite
from mcdrop.pipeline.jobs.batch import _mc_layers
from mcdrop.serving.errors import InvalidArgument


def _site(name: str, owner: str, mask_kind: str = "plain") -> DropoutSite:
    layer = owner
    return DropoutSite(name, layer, "Dropout", "bernoulli", mask_kind, 0.2, (4,), (4,), 1, owner)


SITES = [_site("drop_a", "drop_a"), _site("lstm/input", "lstm", "input"), _site("lstm/recurrent", "lstm", "recurrent"),
         _site("head", "head")]  # fmt: skip
UPSTREAM = {"drop_a": set(), "lstm": {"drop_a"}, "head": {"drop_a", "lstm"}}
"""drop_a feeds the LSTM, both feed the head."""


def test_all_keeps_every_site_and_last_only_those_feeding_no_other() -> None:
    assert selection.select("all", SITES, UPSTREAM).sampled == SITES
    last = selection.select("last", SITES, UPSTREAM)
    assert [s.name for s in last.sampled] == ["head"]
    assert [s.name for s in last.unsampled] == ["drop_a", "lstm/input", "lstm/recurrent"]
    # Two parallel branches that both reach the output are both "last".
    branches = {"drop_a": set(), "lstm": set(), "head": set()}
    assert len(selection.select("last", SITES, branches).sampled) == 4


def test_names_select_layers_and_a_layer_is_sampled_whole() -> None:
    chosen = selection.select(" lstm , head ", SITES, UPSTREAM)
    assert [s.name for s in chosen.sampled] == ["lstm/input", "lstm/recurrent", "head"]
    assert chosen.spec == "lstm,head"
    with pytest.raises(InvalidArgument, match=r"also applies \['lstm/input'\].*Expected the layer's name \('lstm'\)"):
        selection.select("lstm/recurrent", SITES, UPSTREAM)
    with pytest.raises(InvalidArgument, match=r"names 'nope', which is no dropout site\. Expected any of: drop_a, "):
        selection.select("nope", SITES, UPSTREAM)
    with pytest.raises(InvalidArgument, match="Expected all, last or NAME"):
        selection.parse(" , ")


def test_batch_entries_take_mc_layers_as_a_string_or_a_list() -> None:
    assert _mc_layers({}) == "all"
    assert _mc_layers({"mc_layers": "last"}) == "last"
    assert _mc_layers({"mc_layers": ["a", "b"]}) == "a,b"
    with pytest.raises(InvalidArgument, match="mc_layers must be all, last or a list of layer names"):
        _mc_layers({"mc_layers": 3})
