"""The Feast feature repo (definitions.py, feature_store*.yaml) and the code that opens and reads it."""
