"""Entropy Sentinel: an OpenAI-compatible proxy that turns decoding entropy into P(correct)."""

__version__ = "0.1.0"
