"""Sharing distilled sets between sites (export, verify, reload) and auditing them for privacy."""
