"""Batch stage: where MPD data enters (reader, generator, Spark ingest) and is checked (contracts)."""
