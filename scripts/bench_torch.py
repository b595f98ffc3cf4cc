#!/usr/bin/env python3
"""PyTorch on CUDA on the cases bench/bench_gemm.cpp and bench/bench_elementwise.cpp time, for
a side-by-side table (scripts/bench_report.py): same shapes, layouts, float32, TF32 off.

Timing as our benches do it: each sample is kLaunches calls back to back between two CUDA
events, divided by kLaunches; the median of many samples after a warm-up. Writes JSON:
{"device", "torch", "cudnn", "gemm": {"NN/64x3136x576": {"median_ms", "gflops"}},
 "elementwise": {"add/1M": {"median_ms", "gbps"}}}.
"""
import argparse
import json
import os
import statistics

import torch

# Keep these in step with bench/bench_gemm.cpp and bench/bench_elementwise.cpp.
GEMM_SHAPES = [(64, 3136, 576), (256, 784, 1152), (512, 196, 4608), (1000, 32, 2048), (1024, 1024, 1024)]
LAYOUTS = {"NN": (False, False), "NT": (False, True), "TN": (True, False)}
SIZES = {"1M": 1 << 20, "16M": 1 << 24}
COLS = 1024
LAUNCHES = 20


def median_ms(fn, samples):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(LAUNCHES):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / LAUNCHES)
    return statistics.median(times)


def bench_gemm(samples):
    out = {}
    for m, n, k in GEMM_SHAPES:
        for layout, (ta, tb) in LAYOUTS.items():
            a = torch.randn((k, m) if ta else (m, k), device="cuda")
            b = torch.randn((n, k) if tb else (k, n), device="cuda")
            a_op, b_op = (a.t() if ta else a), (b.t() if tb else b)
            ms = median_ms(lambda: torch.matmul(a_op, b_op), samples)
            out[f"{layout}/{m}x{n}x{k}"] = {"median_ms": ms, "gflops": 2.0 * m * n * k / ms / 1e6}
    return out


def bench_elementwise(samples):
    out = {}
    for size, n in SIZES.items():
        x = torch.randn(n // COLS, COLS, device="cuda")
        y = torch.randn(n // COLS, COLS, device="cuda")
        bias = torch.randn(COLS, device="cuda")
        into = torch.empty_like(x)
        f = 4  # bytes per float32
        cases = {  # op: (call, bytes read + written)
            "clone": (lambda: x.clone(), 2 * n * f),
            "fill_": (lambda: into.fill_(1.0), n * f),
            "normal_": (lambda: into.normal_(), n * f),
            "add": (lambda: x + y, 3 * n * f),
            "add_prealloc": (lambda: torch.add(x, y, out=into), 3 * n * f),
            "add_bias": (lambda: x + bias, (2 * n + COLS) * f),
            "relu": (lambda: torch.relu(x), 2 * n * f),
            "exp": (lambda: torch.exp(x), 2 * n * f),
            "sum_last": (lambda: x.sum(1), (n + n // COLS) * f),
            "sum_all": (lambda: x.sum(), (n + 1) * f),
            "sum_axis0": (lambda: x.sum(0), (n + COLS) * f),
        }
        # Batch norm in training, forward and backward, on [N, 64, 64, 64] (N = n / 2^18).
        bx = torch.randn(n >> 18, 64, 64, 64, device="cuda", requires_grad=True)
        bg = torch.randn_like(bx)
        gamma = torch.randn(64, device="cuda", requires_grad=True)
        beta = torch.randn(64, device="cuda", requires_grad=True)

        def batch_norm():
            y = torch.nn.functional.batch_norm(bx, None, None, gamma, beta, training=True, eps=1e-3)
            torch.autograd.backward(y, bg)

        cases["batch_norm"] = (batch_norm, 5 * n * f)
        # bfloat16 data, as autocast keeps activations (float32 batch-norm parameters).
        xh, yh, h = x.bfloat16(), y.bfloat16(), 2
        bxh = bx.detach().bfloat16().requires_grad_(True)
        bgh = bg.bfloat16()

        def batch_norm_bf16():
            y = torch.nn.functional.batch_norm(bxh, None, None, gamma, beta, training=True, eps=1e-3)
            torch.autograd.backward(y, bgh)

        cases["add_bf16"] = (lambda: xh + yh, 3 * n * h)
        cases["relu_bf16"] = (lambda: torch.relu(xh), 2 * n * h)
        cases["batch_norm_bf16"] = (batch_norm_bf16, 5 * n * h)
        for op, (fn, nbytes) in cases.items():
            try:
                ms = median_ms(fn, samples)
            except RuntimeError as e:  # a case this PyTorch cannot run: left out of the table
                print(f"bench_torch: {op}/{size} skipped: {e}")
                continue
            out[f"{op}/{size}"] = {"median_ms": ms, "gbps": nbytes / ms / 1e6}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--samples", type=int, default=50)
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # our cuBLAS path is plain FP32
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version()}

    def save():  # after each part (a temporary file renamed), so a run cut short keeps the first
        with open(args.out + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(args.out + ".tmp", args.out)

    result["gemm"] = bench_gemm(args.samples)
    save()
    result["elementwise"] = bench_elementwise(args.samples)
    save()
    print(f"{result['device']}, torch {result['torch']}, cuDNN {result['cudnn']}: wrote {args.out}")


if __name__ == "__main__":
    main()
