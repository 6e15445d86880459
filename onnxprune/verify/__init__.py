"""Verification: the mask oracle, the checks a pruned model must pass, and test helpers."""
