#!/usr/bin/env python3
"""The Python side of the overhead benchmark: the same forwards as bench/overhead.js, in a PyTorch loop.
Usage: forward_loop.py MODULE ITERATIONS WARMUP SIDE COND_DIM  -> prints {"microsecondsPerCall": ...}"""
import json
import sys
import time

import torch

path, iterations, warmup, side, cond_dim = sys.argv[1], *map(int, sys.argv[2:6])
module = torch.jit.load(path).eval()
inputs = (torch.randn(1, 4, side, side), torch.full((1,), 500, dtype=torch.int64), torch.randn(1, 77, cond_dim))
with torch.inference_mode():
    for _ in range(warmup):
        module(*inputs)
    start = time.perf_counter()
    for _ in range(iterations):
        module(*inputs)
    elapsed = time.perf_counter() - start
print(json.dumps({"microsecondsPerCall": elapsed / iterations * 1e6, "threads": torch.get_num_threads()}))
