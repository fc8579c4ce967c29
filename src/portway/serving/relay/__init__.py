"""The hosted-model relay: requests for ``openai`` catalogue models go to their
upstream as the client sent them and come back as the upstream sent them.

``service.py`` (:class:`RelayService`: attempts, retries, fallbacks, the ledger
row), ``call.py`` (the accepted request), ``stream.py`` (opening and relaying a
stream), ``endpoints.py`` (what differs per endpoint: paths, usage, stream framing),
``rehost.py`` and ``address_guard.py`` (re-hosting upstream images). The HTTP
glue is ``portway.api.relay``; the upstream client is ``portway.backends.upstream``.
"""
