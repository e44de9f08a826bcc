"""Spark read schemas derived from the record TypedDicts, so the format is defined once."""

from __future__ import annotations

import typing
from typing import Any, Literal, get_args, get_origin

from typing_extensions import NotRequired, Required, get_type_hints, is_typeddict

from pyspark.sql import types as T

_SCALARS: dict[type, T.DataType] = {
    int: T.LongType(), str: T.StringType(), float: T.DoubleType(), bool: T.BooleanType(),
}


def _spark_type(hint: Any) -> T.DataType:
    origin = get_origin(hint)
    if origin in (typing.Annotated, NotRequired, Required):
        return _spark_type(get_args(hint)[0])
    if origin is Literal:
        return _spark_type(type(get_args(hint)[0]))
    if origin is list:
        return T.ArrayType(_spark_type(get_args(hint)[0]))
    if is_typeddict(hint):
        return spark_schema(hint)
    if hint in _SCALARS:
        return _SCALARS[hint]
    raise TypeError(f"no Spark type for {hint!r}")


def spark_schema(record: type) -> T.StructType:
    """`Playlist` -> StructType with the same fields; every field nullable so gaps reach the contracts."""
    hints = get_type_hints(record, include_extras=True)
    return T.StructType([T.StructField(name, _spark_type(h), nullable=True) for name, h in hints.items()])
