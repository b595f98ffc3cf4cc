#!/usr/bin/python3
"""Whole networks side by side with PyTorch on this machine: a training step (forward +
backward, training mode) and a forward, same model, batch, input size and thread count.
fgvc's figures come from `fgvc-model-info --time`; PyTorch runs the same loop (Debian
python3-torch and python3-torchvision). Prints both and the ratio.

    /usr/bin/python3 bench/model_vs_torch.py [--bin build/bin] [--threads 2]
"""
import argparse
import json
import os
import subprocess
import time

CASES = [("resnet50", 224, 8), ("inception_v3", 299, 4)]


def torch_times(name, size, batch, threads, repeats):
    import torch
    import torchvision
    torch.set_num_threads(threads)
    kwargs = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
    model = getattr(torchvision.models, name)(**kwargs).train()
    x = torch.randn(batch, 3, size, size)
    forward, step = [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        y = model(x)
        y = y.logits + 0.4 * y.aux_logits if name == "inception_v3" else y  # both heads, as fgvc trains
        t1 = time.perf_counter()
        y.sum().backward()
        t2 = time.perf_counter()
        if i:
            forward.append(t1 - t0)
            step.append(t2 - t0)
    return sorted(forward)[len(forward) // 2], sorted(step)[len(step) // 2]


def fgvc_times(binary, name, size, batch, threads, repeats):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([binary, "--device", "cpu", "--model", name, "--input-size", str(size), "--time", "--batch-size",
                          str(batch), "--repeats", str(repeats), "--json"], check=True, capture_output=True, text=True,
                         env=env).stdout
    j = json.loads(out.strip().splitlines()[-1])
    return j["forward_ms"] / 1e3, j["step_ms"] / 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"{'model':>13} {'batch@size':>10} | {'fgvc fwd':>8} {'step':>7} | {'torch fwd':>9} {'step':>7} | {'step ratio':>10}")
    for name, size, batch in CASES:
        ff, fs = fgvc_times(os.path.join(args.bin, "fgvc-model-info"), name, size, batch, args.threads, args.repeats)
        tf, ts = torch_times(name, size, batch, args.threads, args.repeats)
        print(f"{name:>13} {batch:>4}@{size:<5} | {ff:8.3f} {fs:7.3f} | {tf:9.3f} {ts:7.3f} | {fs / ts:10.2f}")
    print(f"seconds, median of {args.repeats}, {args.threads} threads, training mode; ratio = fgvc / PyTorch")


if __name__ == "__main__":
    main()
