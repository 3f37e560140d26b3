"""dsg — HRDAG's data sync: atomic, numbered, immutable snapshots of research data."""

__version__ = "0.5.0"
