"""Scoring: the model's answers and their metrics (letter scoring, likelihoods, the exact prefix cache)."""
