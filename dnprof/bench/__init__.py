"""Timing, memory, equivalence checks and the machine fingerprint."""
