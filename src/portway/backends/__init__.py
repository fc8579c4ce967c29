"""Backends run models. They know nothing of HTTP or of OpenAI's wire shapes."""
