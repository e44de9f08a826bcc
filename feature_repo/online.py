"""Online lookups through a FeatureService, with unknown entities marked rather than zero-filled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from feast import FeatureStore
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

MISSING = "MISSING"


@dataclass(frozen=True)
class OnlineRow:
    """One entity's features as Feast returns them online; `found` is False for an unknown entity."""

    key: Any
    found: bool
    features: dict[str, Any] = field(default_factory=dict)
    missing_features: tuple[str, ...] = ()


def lookup(store: FeatureStore, service: str, key_name: str, keys: list[Any]) -> list[OnlineRow]:
    """Reads `service` for each key. An entity with no stored row comes back `found=False`.

    Nulls are a legal value (a track without metadata), so the value cannot decide. SQLite answers
    an unknown key with a NOT_FOUND status; Feast's Redis store answers PRESENT nulls stamped at
    the epoch instead. No stored feature carries the epoch, so a value without a time is absent.
    """
    response = store.get_online_features(
        features=store.get_feature_service(service),
        entity_rows=[{key_name: k} for k in keys])
    values = response.to_dict()
    proto = response.proto
    names = list(proto.metadata.feature_names.val)
    rows = []
    for i, key in enumerate(keys):
        absent_by_name = {name: _absent(proto.results[j], i) for j, name in enumerate(names)}
        feature_names = [n for n in names if n != key_name]
        absent = tuple(n for n in feature_names if absent_by_name[n])
        found = len(absent) < len(feature_names)
        rows.append(OnlineRow(key=key, found=found,
                              features={n: values[n][i] for n in feature_names} if found else {},
                              missing_features=absent))
    return rows


def _absent(result, i: int) -> bool:
    status = result.statuses[i]
    return status == FieldStatus.NOT_FOUND or result.event_timestamps[i].seconds == 0
