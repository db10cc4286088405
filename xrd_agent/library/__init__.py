"""Reference library: simulated patterns, names, the stored artifact."""
