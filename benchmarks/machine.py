"""What a speed figure was measured on: the same benchmark differs by up to 2x between machines.

The CPU's model name alone does not say it (a cloud CPU may read "Intel(R) Xeon(R) Processor"),
so the record also names the vector and matrix instruction sets that decide the products' speed:
AVX2, AVX-512 and its bfloat16 form, AMX.
"""

from __future__ import annotations

import os
import platform
import sys

# the /proc/cpuinfo flags that change how fast the float32 and bfloat16 products run
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """The first CPU's model name and which of ISA_FLAGS it has ("", [] where there is no such file)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return platform.processor(), []
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = (s.strip() for s in line.split(":", 1))
            fields.setdefault(key, value)
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", ""), [f for f in ISA_FLAGS if f in flags]


def describe() -> dict:
    """The record every speed benchmark writes under "machine"."""
    import tensorflow as tf
    processor, isa = cpu_info()
    return {"cpus": os.cpu_count(), "processor": processor, "isa": isa, "platform": platform.platform(),
            "python": sys.version.split()[0], "tensorflow": tf.__version__}
