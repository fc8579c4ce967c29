"""Model folders written with ``portway.sdk``, served in-process: chat
(``model.py``), embeddings and images (``media.py``), the thread a user's
generator runs on (``bridge.py``), its yields as deltas (``yields.py``) and the
catalogue builder (``builder.py``)."""
