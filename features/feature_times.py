"""When each entity's features last changed, as of a time, read from a view's offline source.

Point-in-time reads return the features, not when they were written; the index needs that time so
that newest-wins compares a rebuilt row with a streamed update by the features' own times.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from feast import FeatureStore

from segue.features.source_check import source_path


def feature_times_us(store: FeatureStore, service: str, key: str, as_of: datetime) -> dict[str, int]:
    """key -> the newest `event_timestamp` at or before `as_of` of the service's (one) view, in
    epoch microseconds."""
    view = store.get_feature_view(store.get_feature_service(service).feature_view_projections[0].name)
    table = pq.read_table(source_path(view), columns=[key, "event_timestamp"])
    frame = table.to_pandas()
    times = pd.to_datetime(frame.event_timestamp, utc=True)
    frame = frame.assign(us=times.astype("int64") // (1000 if times.dt.unit == "ns" else 1))
    frame = frame[times <= pd.Timestamp(as_of)]
    newest = frame.groupby(key).us.max()
    return dict(zip(newest.index, newest.to_numpy(np.int64).tolist()))
