"""Checks for accelerator-friendly code that run on the CPU.

On a GPU every ``.item()``, ``float(tensor)``, ``if tensor.any():`` or boolean-mask index makes the
host wait for the device (a *host-device synchronisation*), which empties the queue of kernels the
host had run ahead with. The inner loops of the methods (SGLD steps, projection steps, training
batches) avoid them. :func:`count_host_syncs` counts the operations that would synchronise on a GPU
while code runs on the CPU, so that a test can hold a loop to "none per step" without a GPU.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Operations whose result the host must read (a scalar, or an output shape that depends on the data).
_SYNCING = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
            "aten.unique_consecutive.default", "aten._unique2.default", "aten.equal.default"}


def _in_optimizer(depth: int = 12) -> bool:
    """Called from ``torch.optim``: its step counters are CPU tensors on a GPU too (reading them does
    not wait for the device), so they are not counted."""
    f = sys._getframe(2)
    for _ in range(depth):
        if f is None:
            return False
        if "/torch/optim/" in f.f_code.co_filename.replace("\\", "/"):
            return True
        f = f.f_back
    return False


class _SyncCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        bool_index = name in ("aten.index.Tensor", "aten.index_put_.default", "aten.index_put.default") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()) or ())
        if (name in _SYNCING or bool_index) and not _in_optimizer():
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


@contextmanager
def count_host_syncs():
    """``with count_host_syncs() as ops: ...``; afterwards ``len(ops)`` is the number of operations
    inside the block that would make the host wait for a GPU (``ops`` names them)."""
    mode = _SyncCounter()
    with mode:
        yield mode.ops
