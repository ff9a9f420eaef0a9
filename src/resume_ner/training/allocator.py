"""Process-wide settings of the C memory allocator for CPU forward passes.

glibc's ``malloc`` serves blocks above its mmap threshold (at most 32 MiB after its own adjustment) with fresh
``mmap`` calls and gives freed heap memory above its trim threshold back to the kernel, so a forward pass whose
activation buffers are that large has the kernel map and zero-fill them again at every batch. Raising both
thresholds keeps the buffers in the heap for the next batch (the effect jemalloc or tcmalloc have, which
PyTorch's CPU performance guide recommends). The process then keeps the memory of its peak until it exits.
"""

from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 << 20
TRIM_THRESHOLD_BYTES = 1 << 30
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def reuse_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; whether they were set. Nothing is changed on
    another C library or operating system, or when the environment sets any of ``USER_SETTINGS`` (the user's
    own allocator tuning wins)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
