"""Runs ``python -m llama_cpp.server`` (arguments are the server's) with llama.cpp's
extra buffer types off on CPUs that advertise AMX, as Portway loads models: AMX
kernels crash (SIGSEGV in ``ldtilecfg``) on virtual machines that advertise AMX
without enabling it, and the server has no option for it."""

from __future__ import annotations

from llama_cpp.server.__main__ import main

from portway.backends.llamacpp.loading import cpu_advertises_amx, model_params

if __name__ == "__main__":
    with model_params(extra_buffer_types=not cpu_advertises_amx()):
        main()
