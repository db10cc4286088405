"""xrd-agent: identify metal-organic frameworks in Bruker D8 powder scans, live."""

__version__ = "0.1.0"
