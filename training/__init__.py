"""The two-tower model: inputs from the FeatureServices, towers, loss, training, evaluation, export."""
