"""Evaluation stage (the judge): sandboxed execution, parallel resumable scoring, pass@k, post-processing."""
