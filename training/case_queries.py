"""Query features of evaluation and ranking cases, shaped as Feast serves `playlist_query_v1`."""

from __future__ import annotations

import numpy as np
import pandas as pd
from feast import FeatureStore

from segue.features.playlist_features import playlist_query_features
from segue.settings import FeatureSettings
from segue.features.track_catalog import TrackCatalog
from segue.vocabulary import PLAYLIST_SERVICE
from segue.training.feature_inputs import ID_SEQUENCE, service_inputs


def challenge_queries(store: FeatureStore, heldout: pd.DataFrame, catalog: TrackCatalog,
                      sequences: FeatureSettings) -> dict[str, list]:
    """Each case's query features, shaped as Feast serves `playlist_query_v1` (bare names).

    First-k cases are the playlist as it was just before its first hidden track: Feast's
    point-in-time read at `query_as_of`. Random-seed cases have no such moment; they take the
    playlist's final scalar features (the MPD challenge also reveals a playlist's size) with the
    id sequences built from the seeds alone, by the function serving uses for a new playlist.
    The name is the case's (empty when untitled).
    """
    service = store.get_feature_service(PLAYLIST_SERVICE)
    as_of = heldout.query_as_of.fillna(heldout.modified_at)
    entity_df = pd.DataFrame({"pid": heldout.pid.to_numpy(), "case_row": np.arange(len(heldout)),
                              "event_timestamp": pd.to_datetime(as_of, utc=True).dt.as_unit("us")})
    df = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    df = df.sort_values("case_row").reset_index(drop=True)
    columns = {c: df[c].tolist() for c in df.columns if c not in ("case_row", "event_timestamp")}
    columns["name"] = heldout.name.tolist()
    sequence_names = [s.name for s in service_inputs(store, PLAYLIST_SERVICE, embed_entity_key=False)
                      if s.encoding == ID_SEQUENCE]
    position = {uri: i for i, uri in enumerate(catalog.track_uri)}
    track_ids = {n: catalog.features[n].to_pylist() for n in ("artist_uri", "album_uri")}
    for row in np.flatnonzero(heldout.query_as_of.isna().to_numpy()):
        seeds = list(heldout.seed_track_uris.iloc[row])
        tracks = {u: {n: ids[position[u]] for n, ids in track_ids.items()} for u in seeds if u in position}
        built = playlist_query_features("", seeds, tracks, sequences)
        for name in sequence_names:
            columns[name][row] = built[name][0]
    return columns
