"""What this machine multiplies fast, for the settings that say 'auto' (config.model.matmul_dtype).

Detected, never assumed: bf16 matmuls pay only where the hardware multiplies bf16 natively, which is
GPUs, TPUs and x86 CPUs with AVX512-BF16 or AMX-BF16 (the `flags` line of /proc/cpuinfo on Linux). On
other CPUs XLA would emulate them in float32 and they would only add rounding. One cached read of
/proc/cpuinfo; a machine without that file counts as a CPU without bf16.
"""

from __future__ import annotations

import functools

import jax

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that multiply bf16 pairs into float32 sums
_ACCELERATORS = ("gpu", "tpu", "cuda", "rocm")


@functools.cache
def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (x86's `flags` line); empty where there is no such file."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16_matmul(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU has a bf16 dot-product instruction (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_matmul_dtype(setting: str, backend: str | None = None, flags: frozenset[str] | None = None) -> str:
    """config.model.matmul_dtype -> 'float32' or 'bfloat16': 'auto' is bfloat16 on accelerators and on CPUs
    with bf16 dot-product instructions, float32 on other CPUs; any other setting is itself."""
    if setting != "auto":
        return setting
    backend = jax.default_backend() if backend is None else backend
    if backend in _ACCELERATORS:
        return "bfloat16"
    return "bfloat16" if backend == "cpu" and cpu_has_bf16_matmul(flags) else "float32"
