"""Reading a rendered exposition back with Prometheus's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from portway.metrics import Metrics


def parsed(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def samples(metrics: Metrics) -> list[Sample]:
    return parsed(metrics.render().decode())


def value_in(found: list[Sample], name: str, **labels: str) -> float:
    values = [sample.value for sample in found if sample.name == name and sample.labels == labels]
    assert len(values) == 1, (name, labels, values)
    return values[0]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return value_in(samples(metrics), name, **labels)
