"""The values the code passes around are the contract's own: one source, checked for drift."""

from __future__ import annotations

import dataclasses
from typing import get_args

from xrd_agent import decide, identification, messages, pattern
from xrd_agent.identification import Flag


def test_flags_are_exactly_the_contracts_phase_flags():
    assert [f.value for f in Flag] == list(get_args(messages.PhaseFlag))


def test_alert_reasons_and_severities_are_exactly_the_contracts():
    reasons = list(get_args(messages.AlertReason))
    assert sorted(decide.SEVERITY) == sorted(reasons)
    assert set(decide.SEVERITY.values()) == set(get_args(messages.Severity))
    constants = {v for k, v in vars(decide).items() if k.isupper() and isinstance(v, str) and v in reasons}
    assert constants == set(reasons)  # a named constant for every reason, and only those
    for reason in reasons:
        assert decide.alert(reason).severity == decide.SEVERITY[reason]


def test_candidate_coverage_and_cam_region_have_one_definition():
    assert identification.Candidate is messages.Candidate
    assert identification.CamRegion is messages.CamRegion
    assert pattern.Coverage is messages.Coverage
    for cls, value in ((messages.Candidate, messages.Candidate(1, "DOTSOV", "HKUST-1", 0.5)),
                       (messages.Coverage, messages.Coverage(5.0, 50.0, 1.0)),
                       (messages.CamRegion, messages.CamRegion(10.0, 11.0, 0.5))):
        # fields with defaults (a material's determinations, a fit) are optional in the contract
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        assert list(value.to_dict()) == required
        schema = messages._object_schema(cls)
        assert schema["required"] == required
        assert set(schema["properties"]) == {f.name for f in dataclasses.fields(cls)}
        assert schema["additionalProperties"] is False
