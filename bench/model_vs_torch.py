#!/usr/bin/python3
"""Whole networks side by side with PyTorch on this machine: a training step and a forward,
same model, batch, input size and thread count. The step is what fgvc-train does per batch:
forward (training mode), label-smoothed cross-entropy (plus 0.4 x the aux loss for
inception_v3), backward, and the optimizer's update (--optimizer rmsprop, the default: TF
RMSProp with weight decay; sgd; or none: forward + backward of sum(logits) only).
fgvc's figures come from `fgvc-model-info --time --optimizer ...`; PyTorch runs the same loop
(Debian python3-torch and python3-torchvision; torch.optim.RMSprop with the same decay,
momentum and epsilon). Prints both and the ratio.

    /usr/bin/python3 bench/model_vs_torch.py [--bin build/bin] [--threads 2] [--optimizer rmsprop]
"""
import argparse
import json
import os
import subprocess
import time

CASES = [("resnet50", 224, 8), ("inception_v3", 299, 4)]


def torch_times(name, size, batch, threads, repeats, optimizer):
    import torch
    import torchvision
    torch.set_num_threads(threads)
    kwargs = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
    model = getattr(torchvision.models, name)(**kwargs).train()
    x = torch.randn(batch, 3, size, size)
    labels = torch.arange(batch) % 1000
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    opt = None
    if optimizer == "rmsprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=0.045, alpha=0.9, eps=1.0, momentum=0.9, weight_decay=4e-5)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.045, momentum=0.9, weight_decay=4e-5)
    forward, step = [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        y = model(x)
        t1 = time.perf_counter()
        if opt is None:
            y = y.logits + 0.4 * y.aux_logits if name == "inception_v3" else y  # both heads, as fgvc trains
            y.sum().backward()
        else:
            loss = ce(y.logits, labels) + 0.4 * ce(y.aux_logits, labels) if name == "inception_v3" else ce(y, labels)
            loss.backward()
            opt.step()
            opt.zero_grad()
        t2 = time.perf_counter()
        if i:
            forward.append(t1 - t0)
            step.append(t2 - t0)
    return sorted(forward)[len(forward) // 2], sorted(step)[len(step) // 2]


def fgvc_times(binary, name, size, batch, threads, repeats, optimizer):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([binary, "--device", "cpu", "--model", name, "--input-size", str(size), "--time", "--batch-size",
                          str(batch), "--repeats", str(repeats), "--optimizer", optimizer, "--json"], check=True, capture_output=True, text=True,
                         env=env).stdout
    j = json.loads(out.strip().splitlines()[-1])
    return j["forward_ms"] / 1e3, j["step_ms"] / 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--optimizer", default="rmsprop", choices=["rmsprop", "sgd", "none"])
    args = ap.parse_args()
    print(f"{'model':>13} {'batch@size':>10} | {'fgvc fwd':>8} {'step':>7} | {'torch fwd':>9} {'step':>7} | {'step ratio':>10}")
    for name, size, batch in CASES:
        ff, fs = fgvc_times(os.path.join(args.bin, "fgvc-model-info"), name, size, batch, args.threads, args.repeats,
                            args.optimizer)
        tf, ts = torch_times(name, size, batch, args.threads, args.repeats, args.optimizer)
        print(f"{name:>13} {batch:>4}@{size:<5} | {ff:8.3f} {fs:7.3f} | {tf:9.3f} {ts:7.3f} | {fs / ts:10.2f}")
    step = "forward + backward" if args.optimizer == "none" else f"training step with {args.optimizer}"
    print(f"seconds, median of {args.repeats}, {args.threads} threads, {step}; ratio = fgvc / PyTorch")


if __name__ == "__main__":
    main()
