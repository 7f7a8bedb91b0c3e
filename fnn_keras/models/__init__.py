"""Models built from a backbone and the feedback layer."""
