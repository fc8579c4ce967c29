"""Resolves what a client wrote in ``model`` to one model version and its backend."""
