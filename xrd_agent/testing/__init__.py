"""Helpers shared by the tests and by users: a simulated D8 that writes real-format files,
a small stand-in library, and a capture subscriber. The ledger runs in memory with
``Ledger(None)``."""
