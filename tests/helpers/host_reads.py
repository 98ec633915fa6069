"""Find the host reads in a forward pass on the CPU: each would be a synchronisation on a GPU.

``HostReads`` is a ``TorchFunctionMode`` that records the calls that need a tensor's values on the host (``.item()``,
``bool()``, ``int()``, ``float()``, ``.tolist()``, ``.cpu()``, ``.numpy()``) or whose output's shape depends on
them (``nonzero``, ``masked_select``, ``unique``, indexing with a bool mask, ``repeat_interleave`` with tensor
repeats and no ``output_size``): on CUDA each waits for the GPU to finish what was queued. It cannot see what only
a GPU run shows, such as a blocking copy from pageable host memory; ``test_gpu_paths.py`` checks that on CUDA.
"""

from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode

READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__,
         torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.nonzero, torch.nonzero, torch.argwhere,
         torch.Tensor.argwhere, torch.masked_select, torch.Tensor.masked_select, torch.unique, torch.Tensor.unique,
         torch.unique_consecutive}


def _bool_index(index) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
               for i in (index if isinstance(index, tuple) else (index,)))


class HostReads(TorchFunctionMode):
    """``found``: ``(call, "file.py:function")`` for every host read, the innermost ``vlm_primer`` frame named."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = None
        if func in READS:
            name = func.__name__
        elif func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and _bool_index(args[1]):
            name = f"{func.__name__}[bool mask]"
        elif (func in (torch.repeat_interleave, torch.Tensor.repeat_interleave) and len(args) > 1
              and isinstance(args[1], torch.Tensor) and kwargs.get("output_size") is None):
            name = "repeat_interleave(tensor repeats)"
        if name is not None:
            ours = [f for f in traceback.extract_stack()[:-1] if "/vlm_primer/" in f.filename]
            where = f"{ours[-1].filename.rsplit('/', 1)[-1]}:{ours[-1].name}" if ours else "outside vlm_primer"
            self.found.append((name, where))
        return func(*args, **kwargs)
