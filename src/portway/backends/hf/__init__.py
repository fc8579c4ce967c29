"""Hugging Face models run in-process: sentence-transformers embeddings
(``embeddings.py``) and diffusers images (``images.py``), with their catalogue
builders (``builder.py``)."""
