"""Runners: models served from any machine over one outbound WebSocket.

A runner (``portway runner DIR``) loads a model folder and attaches to a server at
``/v1/runners/connect``; the server then serves the model through a
:class:`~portway.runners.backend.RunnerBackend` that hands each request to one of
the attached runners. The frames both sides exchange are in :mod:`portway.runners.wire`.
"""
