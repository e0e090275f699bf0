"""End-to-end runs: stage chaining with a cache, and the report."""
