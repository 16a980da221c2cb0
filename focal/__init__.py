"""Focal: a multi-tenant runtime for business-aligned conversational agents."""

__version__ = "0.1.0"
