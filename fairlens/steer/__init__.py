"""Steering: the gated steerer, the panel's interventions, and everything learnt from the fit split."""
