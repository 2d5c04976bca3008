"""How TensorFlow runs in a stage process: its memory allocator, its threads and its devices, set before it starts."""

from __future__ import annotations

import os
from typing import Any

from mnist3d.parallel import usable_cores

# TensorFlow's own best-fit allocator for tensors on the CPU, instead of malloc. malloc hands each tensor above 32 MB
# (the first convolution's output at batch 128 is 33.5 MB, its gradient as much) back to the OS when it is freed, so
# every training step mapped ~1 GB anew and faulted it in page by page: 235,000 minor faults a step. The BFC
# allocator keeps what it has freed and reuses it. Tensors come out bit-identical; only where they live changes.
CPU_ALLOCATOR = "TF_CPU_ALLOCATOR_USE_BFC"
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def prepare_tensorflow(threads: int = 0) -> None:
    """Before TensorFlow starts: its allocator keeps freed memory, a GPU takes memory as it needs it (so queued runs
    can share one), and with `threads` > 0 each of its two thread pools has that many threads (0: TensorFlow's
    default, all cores, or what TF_NUM_INTRAOP_THREADS and TF_NUM_INTEROP_THREADS say)."""
    os.environ.setdefault(CPU_ALLOCATOR, "true")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if threads:
        for name in THREAD_VARIABLES:
            os.environ[name] = str(threads)


def allocator_name() -> str:
    """Which allocator TensorFlow's CPU tensors come from in this process."""
    return "BFC" if os.environ.get(CPU_ALLOCATOR, "").lower() in ("true", "1") else "malloc"


def describe_devices(strategy: Any) -> str:
    """What training runs on: the devices of `strategy`, threads per pool, the allocator."""
    import tensorflow as tf

    try:
        devices = list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has none: TensorFlow places ops on the first GPU, where there is one
        devices = [(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0].name]
    # 0 means TensorFlow's default: the variable if set, else every core this process may use
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.environ.get(THREAD_VARIABLES[0])
    short = [name.replace("/job:localhost/replica:0/task:0/", "") for name in devices]
    pools = f"{threads or usable_cores()} thread(s) per TensorFlow pool"
    return f"{', '.join(short)}; {pools}; the {allocator_name()} allocator for CPU tensors"
