"""Synthetic MPD data with learnable structure: latent tastes, drift over time and cold start."""

from segue.batch.synth.generate import generate

__all__ = ["generate"]
