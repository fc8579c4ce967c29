"""Backends run models; the serving layer talks to them in the domain types of
``base.py`` (requests, deltas, usage), never in wire models.

One package per engine family, each with its catalogue builder (``builder.py``,
listed in ``portway.builders``): ``llamacpp`` (GGUF models in-process), ``hf``
(sentence-transformers embeddings, diffusers images), ``python`` (model folders
written with ``portway.sdk``) and ``upstream`` (hosted models). Local families
know nothing of HTTP or of OpenAI's wire shapes; ``upstream`` relays them, so
speaking both is its job. Shared helpers stay at the top: ``scripted.py`` (a
canned model for tests), ``batching.py``, ``textstream.py``, ``tokens.py`` (the
one token estimate), ``digests.py`` and ``versions.py`` (version ids),
``offline.py``.
"""
