"""Online lookups through a FeatureService, with unknown entities marked rather than zero-filled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from feast import FeatureStore
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus


@dataclass(frozen=True)
class OnlineRow:
    """One entity's features as Feast returns them online; `found` is False for an unknown entity."""

    key: Any
    found: bool
    features: dict[str, Any] = field(default_factory=dict)
    missing_features: tuple[str, ...] = ()
    event_time_us: int = 0  # the newest feature's event time (epoch microseconds); 0 when not found


class OnlineFeatureReader:
    """Reads one FeatureService for one entity key; the service is resolved once, not per request.

    Nulls are a legal value (a track without metadata), so the value cannot say whether an entity
    exists. SQLite answers an unknown key with a NOT_FOUND status; Feast's Redis store answers
    PRESENT nulls stamped at the epoch instead. No stored feature carries the epoch, so a value
    without a time counts as absent too.
    """

    def __init__(self, store: FeatureStore, service: str, key_name: str, only: list[str] | None = None):
        """`only`: feature references ("view:feature") to read instead of the whole service."""
        self._store = store
        self._service = only or store.get_feature_service(service)
        self._key_name = key_name

    def read(self, keys: list[Any]) -> list[OnlineRow]:
        response = self._store.get_online_features(
            features=self._service, entity_rows=[{self._key_name: k} for k in keys])
        values = response.to_dict()
        proto = response.proto
        names = list(proto.metadata.feature_names.val)
        absent_by_feature = {}
        newest = [0] * len(keys)
        for name, result in zip(names, proto.results):
            if name != self._key_name:
                micros = [t.seconds * 1_000_000 + t.nanos // 1000 for t in result.event_timestamps]
                absent_by_feature[name] = [s == FieldStatus.NOT_FOUND or ts == 0
                                           for s, ts in zip(result.statuses, micros)]
                newest = [max(a, b) for a, b in zip(newest, micros)]
        features = list(absent_by_feature)
        rows = []
        for i, key in enumerate(keys):
            absent = tuple(n for n in features if absent_by_feature[n][i])
            found = len(absent) < len(features)
            rows.append(OnlineRow(key=key, found=found,
                                  features={n: values[n][i] for n in features} if found else {},
                                  missing_features=absent, event_time_us=newest[i] if found else 0))
        return rows


def lookup(store: FeatureStore, service: str, key_name: str, keys: list[Any]) -> list[OnlineRow]:
    """One-off read of `service` for `keys`; long-lived callers keep an OnlineFeatureReader."""
    return OnlineFeatureReader(store, service, key_name).read(keys)
