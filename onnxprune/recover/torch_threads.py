"""Run torch with a given number of intra-op threads, restoring the previous setting."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def torch_threads(n: int):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
