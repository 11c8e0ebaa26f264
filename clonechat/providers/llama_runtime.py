"""Process-wide llama-cpp-python settings that keep the embedded model working on every CPU.

On CPUs with Intel AMX (Sapphire Rapids and later Xeons) llama.cpp built with ``-march=native``
puts Q4_1 weights (SmolLM2's quantisation) in its AMX buffer type, and ggml's AMX matrix
multiply then crashes the process with a segmentation fault on the first decode (seen on this
project's machines: ``ggml_backend_amx_mul_mat``). The AMX buffer is one of llama.cpp's "extra
buffer types", which a model loads into only when ``llama_model_params.use_extra_bufts`` is
set; llama-cpp-python sets it and offers no argument to unset it, so :func:`apply` wraps the
default-parameters function once per process. Without the extra buffers the weights stay in
the plain CPU buffer and use the AVX-512/AVX2 kernels the build was compiled with.

:mod:`clonechat.providers.llama_server` starts ``llama_cpp.server`` with the same setting.
"""

from __future__ import annotations

import functools
import platform
import threading
from pathlib import Path
from typing import Any

_applied = False
_lock = threading.Lock()
#: Held while a model loads. llama-cpp-python silences a load by swapping ``sys.stdout`` and
#: ``sys.stderr`` (and fds 1 and 2) for /dev/null and back, which is not thread-safe: two
#: providers loading at once (a cross-model pair of two embedded models, the scoring context
#: beside a generation one) can leave the process writing its output to /dev/null, or to a closed
#: file. Loads are rare and short; serialising them costs nothing.
LOAD_LOCK = threading.Lock()


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU reports Intel AMX (Linux's /proc/cpuinfo flags; False elsewhere)."""
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return "amx_tile" in line.split()
    return False


def apply() -> None:
    """Make every llama model this process loads skip the extra buffer types, on AMX CPUs.
    Idempotent and cheap; call it before the first ``Llama(...)``."""
    global _applied
    if _applied or not cpu_has_amx():
        return
    with _lock:
        if _applied:
            return
        import llama_cpp.llama_cpp as native

        default_params = native.llama_model_default_params

        def without_extra_buffers() -> Any:
            params = default_params()
            params.use_extra_bufts = False
            return params

        native.llama_model_default_params = without_extra_buffers
        _applied = True
