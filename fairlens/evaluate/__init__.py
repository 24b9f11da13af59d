"""Evaluation: BBQ with a steerer, and the panel of suites (BBQ, CrowS-Pairs, open-ended, utility)."""
