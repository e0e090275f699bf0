"""Architecture search with Optuna."""
