"""Benchmarks and fault runs behind ``xrd-agent bench``.

Each module is one run (latency, throughput, soak, burst, crash, hostile); ``machine``
records the facts and the reference timing printed beside every figure; ``sandbox`` runs
a reader in child processes with a per-file deadline so a hang is reported, not suffered.
"""
