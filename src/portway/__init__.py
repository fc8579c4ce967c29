"""Portway: a self-hosted, OpenAI-compatible model platform."""

__version__ = "0.1.0"
