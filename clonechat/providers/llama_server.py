"""``python -m clonechat.providers.llama_server ARGS``: llama-cpp-python's OpenAI-compatible
server (``python -m llama_cpp.server ARGS``, unchanged) with :mod:`llama_runtime`'s settings,
so it runs on the CPUs where the plain server crashes. The tests and benchmarks start it."""

from __future__ import annotations

import runpy
import sys

from clonechat.providers import llama_runtime


def command(*args: str) -> list[str]:
    """The command line that starts the server with ``args``."""
    return [sys.executable, "-m", "clonechat.providers.llama_server", *args]


def main() -> None:
    llama_runtime.apply()
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
