"""Training: distribution strategy, optimizer, callbacks and the fit loop."""
