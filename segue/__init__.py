"""Segue: two-tower deep retrieval for playlist continuation."""

__version__ = "0.1.0"
