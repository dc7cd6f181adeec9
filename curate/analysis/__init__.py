"""Whole-set analysis: duplicates, identities, coverage and the training selection."""
