"""Slices, counters, records and metrics: what happens to a scored response."""
