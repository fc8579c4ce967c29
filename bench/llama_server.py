"""Runs ``python -m llama_cpp.server`` with the llama.cpp load settings Portway uses.

On CPUs that advertise AMX, Portway loads models with llama.cpp's extra buffer
types off (AMX kernels crash on virtual machines that advertise AMX without
enabling it); llama-cpp-python's server has no option for that, so this launcher
makes the same adjustment and then hands over to the server's own ``main``.
Arguments are the server's (``--model``, ``--n_threads``, ``--port``...).
"""

from __future__ import annotations

from llama_cpp.server.__main__ import main

from portway.backends.llamacpp.loading import cpu_advertises_amx, model_params

if __name__ == "__main__":
    with model_params(extra_buffer_types=not cpu_advertises_amx()):
        main()
