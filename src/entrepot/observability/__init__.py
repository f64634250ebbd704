"""Logging with correlation ids, and the audit trail helpers."""
