"""Segue: two-tower deep retrieval for playlist continuation."""

import os

# Before anything imports TensorFlow: TensorFlow Recommenders needs Keras 2, and TensorFlow's native
# logs (CUDA probes on machines without a GPU, oneDNN notices) are noise unless asked for. A value
# set in the environment wins.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
