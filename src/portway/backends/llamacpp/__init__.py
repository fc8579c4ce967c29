"""GGUF models run in-process by llama.cpp: the backend (``backend.py``), its
sampling (``sampling.py``) and loading (``loading.py``), prompts (``templates.py``,
``control_text.py``), the embedded default model (``default_model.py``) and the
catalogue builder (``builder.py``)."""
