"""Candidate evaluation for the searches: application metrics, the gated evaluator, pools."""
