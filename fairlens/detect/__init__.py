"""Biased activation detection: linear probes, the layer sweep, and the gate label definitions."""
