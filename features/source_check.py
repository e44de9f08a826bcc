"""Checks that every feature a view declares exists in its source table, with a matching type.

Feast itself only logs a warning for a missing column, and the failure then surfaces deep inside a
join or a materialization. This check fails first, naming the view, the field and the file.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
from feast import FeatureStore
from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp


class FeatureSourceError(ValueError):
    """A feature view that does not match the table behind it."""


class RegistryNotApplied(FeatureSourceError):
    """The Feast registry holds no feature views: `feast apply` has not run for this repo."""


_COMPATIBLE = {
    String: (pa.string(), pa.large_string()),
    Int64: (pa.int64(), pa.int32()),
    Int32: (pa.int32(),),
    Float64: (pa.float64(), pa.float32()),
    Float32: (pa.float32(),),
    Bool: (pa.bool_(),),
    UnixTimestamp: (pa.timestamp("us", tz="UTC"),),
    Array(String): (pa.list_(pa.string()), pa.list_(pa.large_string())),
    Array(Int64): (pa.list_(pa.int64()),),
}
# A view tagged `built_by` reads a table that job writes (not `segue batch features`).
BUILT_BY = "built_by"


def _same_type(got: pa.DataType, want: pa.DataType) -> bool:
    """Equal types; for lists the element types, whatever the element's nullability."""
    if pa.types.is_list(got) and pa.types.is_list(want):
        return got.value_type.equals(want.value_type)
    return got.equals(want)


def source_path(view) -> str:
    source = view.batch_source
    return getattr(source, "path", None) or source.file_options.uri


def check_feature_sources(store: FeatureStore) -> list[str]:
    """Raises FeatureSourceError listing every mismatch; returns the views checked."""
    problems, checked = [], []
    if not store.list_feature_views():
        raise RegistryNotApplied(f"the Feast registry of {store.repo_path} holds no feature views; "
                                 "run `segue features apply` first")
    for view in store.list_feature_views():
        path = source_path(view)
        if not Path(path).exists():
            job = view.tags.get(BUILT_BY, "segue batch features")
            problems.append(f"view `{view.name}`: source table {path} does not exist (run `{job}` first)")
            continue
        schema = ds.dataset(path, format="parquet").schema
        for column in [*view.join_keys, view.batch_source.timestamp_field]:
            if column not in schema.names:
                problems.append(f"view `{view.name}`: key/timestamp column `{column}` missing from {path}")
        for field in view.features:
            if field.name not in schema.names:
                problems.append(f"view `{view.name}`: feature `{field.name}` has no column in {path} "
                                f"(columns: {', '.join(schema.names)})")
                continue
            got = schema.field(field.name).type
            allowed = _COMPATIBLE.get(field.dtype)
            if allowed is not None and not any(_same_type(got, a) for a in allowed):
                problems.append(f"view `{view.name}`: feature `{field.name}` is {field.dtype} in "
                                f"definitions.py but {got} in {path}")
        checked.append(view.name)
    if problems:
        raise FeatureSourceError("feature definitions do not match their tables:\n  - "
                                 + "\n  - ".join(problems))
    return checked
