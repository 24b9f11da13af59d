"""Activations: reading hidden states at hook points, in memory or streamed to a resumable store."""
