"""The Feast repo `feast apply` reads: definitions.py and the profiles' feature_store*.yaml."""
