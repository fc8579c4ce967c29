"""Hosted models: a model served by another OpenAI-compatible server.

This family speaks HTTP and OpenAI's wire shapes, since relaying them is its job:
``backend.py`` (``UpstreamBackend``: open, the one retry loop), ``errors.py``,
``exchange.py`` (one attempt's response), ``http_client.py`` (the session),
``pool.py`` (replicas and cool-downs), ``retry.py`` (backoff), ``sse.py``
(reading the upstream's events), ``spec.py`` (the catalogue's timeouts and
retries) and ``builder.py`` (the catalogue builder).
"""
