"""Scan readers, one module per format family."""
