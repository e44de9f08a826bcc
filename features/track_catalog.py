"""The track catalogue: every track of the candidate view with its features as of a time, read
from Feast's offline store (training, evaluation, the ranker fit and the index rebuild share it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore

from segue.features.source_check import source_path
from segue.vocabulary import TRACK_KEY, TRACK_SERVICE, WINDOW_PLAYLISTS_FEATURE


@dataclass
class TrackCatalog:
    """Every track's candidate features as Feast serves them (bare feature names)."""

    track_uri: np.ndarray
    features: dict[str, np.ndarray]  # Feast's columns, by bare name

    def __len__(self) -> int:
        return len(self.track_uri)


def _entity_rows(uris: np.ndarray, as_of: datetime | None) -> pd.DataFrame:
    when = pd.Timestamp(as_of or pd.Timestamp.now(tz="UTC"))
    when = when.tz_localize("UTC") if when.tzinfo is None else when
    return pd.DataFrame({TRACK_KEY: uris, "event_timestamp": when.as_unit("us")})


def window_playlists(store: FeatureStore, uris: np.ndarray, as_of: datetime | None = None) -> pa.Array:
    """Each track's playlists in the co-occurrence window as of `as_of`, through Feast: 0 for a
    track the co-occurrence table does not hold (on no playlist of the window), as the ranker
    was trained."""
    rows = _entity_rows(uris, as_of)
    df = store.get_historical_features(entity_df=rows, features=[WINDOW_PLAYLISTS_FEATURE]).to_df()
    found = df.drop_duplicates(TRACK_KEY).set_index(TRACK_KEY)[WINDOW_PLAYLISTS_FEATURE.split(":")[1]]
    return pa.array(found.reindex(uris).fillna(0).astype("int64").to_numpy(), pa.int64())


def load_catalog(store: FeatureStore, as_of: datetime | None = None) -> TrackCatalog:
    """All tracks of the candidate view, with their features as of `as_of` (default: now).

    The track list comes from the view's offline source; the features from Feast's point-in-time
    read of the candidate FeatureService, the same service the model was trained on.
    """
    service = store.get_feature_service(TRACK_SERVICE)
    view = store.get_feature_view(service.feature_view_projections[0].name)
    uris = pq.read_table(source_path(view), columns=[TRACK_KEY]).column(TRACK_KEY)
    uris = np.unique(uris.to_numpy(zero_copy_only=False).astype(object))
    df = store.get_historical_features(entity_df=_entity_rows(uris, as_of), features=service).to_df()
    df = df.drop_duplicates(TRACK_KEY).set_index(TRACK_KEY).loc[uris].reset_index()
    table = pa.Table.from_pandas(df.drop(columns=["event_timestamp"]), preserve_index=False)
    return TrackCatalog(track_uri=uris, features={n: table.column(n) for n in table.column_names})
