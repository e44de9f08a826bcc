"""The code that opens and reads the Feast store: the repo itself (definitions, profiles) is feature_repo/."""
