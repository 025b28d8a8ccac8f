"""The warm-up ramp controller: a pure function from scraped metrics to the next move."""

from revive.ramp.controller import (
    Change,
    ClassLoad,
    Decision,
    DecisionKind,
    FeatureCandidate,
    RampPolicy,
    Sample,
    decide,
)

__all__ = [
    "Change",
    "ClassLoad",
    "Decision",
    "DecisionKind",
    "FeatureCandidate",
    "RampPolicy",
    "Sample",
    "decide",
]
