"""An estate's ``ramp:`` section sets the ramp's pacing; bad keys are located input errors."""

from __future__ import annotations

import pytest

from revive.errors import TopologyError
from revive.ramp import RampPolicy
from revive.ramp.pacing import pacing
from revive.topology import loads
from tests.factories import dump, estate, service


def test_the_section_overrides_the_defaults_it_names_and_keeps_the_rest() -> None:
    data = estate(service("app"))
    data["ramp"] = {"settle_s": 2, "scrape_interval_s": 1}
    chosen = pacing(loads(dump(data)).ramp)
    assert chosen.scrape_interval_s == 1
    policy = chosen.policy()
    assert isinstance(policy, RampPolicy) and policy.settle_s == 2
    assert policy.cooldown_s == RampPolicy().cooldown_s
    assert pacing({}).scrape_interval_s is None and pacing({}).policy() == RampPolicy()


def test_unknown_or_out_of_range_keys_are_located() -> None:
    data = estate(service("app"))
    data["ramp"] = {"settle": 2, "max_step": 3}
    with pytest.raises(TopologyError) as err:
        loads(dump(data), "estate.yaml")
    text = str(err.value)
    assert "ramp.settle: unknown key" in text and "ramp.max_step:" in text
