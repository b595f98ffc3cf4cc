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

On a GPU (--device cuda [--amp bf16]) both time whole steps only (fgvc-model-info --whole-model,
CUDA synchronised around each step, same as torch.cuda.synchronize here), TF32 as both default
(convolutions may use it, matmuls not), cuDNN autotuning on in PyTorch (fgvc takes cuDNN's
heuristic choice), with larger batches; it adds images/s and peak GPU memory (each
framework's allocator: bytes handed out, not cached). --json FILE writes the rows.
"""
import argparse
import json
import os
import subprocess
import time

CASES = [("resnet50", 224, 8), ("inception_v3", 299, 4)]
CUDA_CASES = [("resnet50", 224, 64), ("inception_v3", 299, 64), ("resnet50", 448, 16)]


def torch_times(name, size, batch, threads, repeats, optimizer, device="cpu", amp="off"):
    import torch
    import torchvision
    torch.set_num_threads(threads)
    cuda = device == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's defaults, which are fgvc's: matmul in float32,
        torch.backends.cudnn.allow_tf32 = True  # convolutions may use TF32 tensor cores
        torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    kwargs = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
    model = getattr(torchvision.models, name)(**kwargs).train().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    labels = torch.arange(batch, device=device) % 1000
    autocast = torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16, enabled=amp != "off") \
        if cuda else torch.autocast("cpu", enabled=False)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    opt = None
    if optimizer == "rmsprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=0.045, alpha=0.9, eps=1.0, momentum=0.9, weight_decay=4e-5)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.045, momentum=0.9, weight_decay=4e-5)
    forward, step = [], []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    warmup = 3 if cuda else 1
    for i in range(repeats + warmup):
        sync()
        t0 = time.perf_counter()
        with autocast:
            y = model(x)
        sync()
        t1 = time.perf_counter()
        with autocast:
            if opt is None:
                y = y.logits + 0.4 * y.aux_logits if name == "inception_v3" else y  # both heads, as fgvc trains
                loss = y.float().sum()
            else:
                loss = ce(y.logits, labels) + 0.4 * ce(y.aux_logits, labels) if name == "inception_v3" else ce(y, labels)
        loss.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)
        sync()
        t2 = time.perf_counter()
        if i >= warmup:
            forward.append(t1 - t0)
            step.append(t2 - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return sorted(forward)[len(forward) // 2], sorted(step)[len(step) // 2], peak


def fgvc_times(binary, name, size, batch, threads, repeats, optimizer, device="cpu", amp="off", library_path=None,
               cudnn_benchmark=False):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if library_path:  # for fgvc's process only: PyTorch here keeps its own libraries
        env["LD_LIBRARY_PATH"] = library_path
    cmd = [binary, "--device", device, "--model", name, "--input-size", str(size), "--time", "--batch-size", str(batch),
           "--repeats", str(repeats), "--optimizer", optimizer, "--json"]
    if device == "cuda":
        cmd += ["--whole-model", "--amp", amp] + (["--cudnn-benchmark"] if cudnn_benchmark else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    j = json.loads(out.strip().splitlines()[-1])
    return j["forward_ms"] / 1e3, j["step_ms"] / 1e3, j.get("peak_gpu_mib")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--optimizer", default="rmsprop", choices=["rmsprop", "sgd", "none"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="with --device cuda")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="with --device cuda: fgvc measures cuDNN's algorithms too, as PyTorch here always does")
    ap.add_argument("--fgvc-library-path", help="LD_LIBRARY_PATH for fgvc-model-info (scripts/gpu-check.sh's bundle)")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    print(f"{'model':>13} {'batch@size':>10} | {'fgvc fwd':>8} {'step':>7} | {'torch fwd':>9} {'step':>7} | {'step ratio':>10}"
          + (f" | {'fgvc img/s':>10} {'torch img/s':>11} | {'fgvc MiB':>8} {'torch MiB':>9}" if cuda else ""))
    rows = []

    def save():  # after every model (a temporary file renamed), so a run cut short keeps its rows
        if args.json:
            with open(args.json + ".tmp", "w") as f:
                json.dump({"device": args.device, "amp": args.amp, "optimizer": args.optimizer, "rows": rows}, f, indent=1)
            os.replace(args.json + ".tmp", args.json)

    for name, size, batch in CUDA_CASES if cuda else CASES:
        try:
            ff, fs, fm = fgvc_times(os.path.join(args.bin, "fgvc-model-info"), name, size, batch, args.threads,
                                    args.repeats, args.optimizer, args.device, args.amp, args.fgvc_library_path,
                                    args.cudnn_benchmark)
        except subprocess.CalledProcessError as e:  # one model failing must not lose the others' rows
            print(f"{name:>13} {batch:>4}@{size:<5} | fgvc-model-info failed ({e.returncode}): "
                  f"{(e.stderr or '').strip().splitlines()[-1:]}", flush=True)
            continue
        tf, ts, tm = torch_times(name, size, batch, args.threads, args.repeats, args.optimizer, args.device, args.amp)
        line = f"{name:>13} {batch:>4}@{size:<5} | {ff:8.3f} {fs:7.3f} | {tf:9.3f} {ts:7.3f} | {fs / ts:10.2f}"
        if cuda:
            line += f" | {batch / fs:10.1f} {batch / ts:11.1f} | {fm:8.0f} {tm:9.0f}"
        print(line, flush=True)
        rows.append({"model": name, "input_size": size, "batch": batch, "amp": args.amp,
                     "fgvc_cudnn_benchmark": args.cudnn_benchmark, "fgvc_forward_s": ff,
                     "fgvc_step_s": fs, "torch_forward_s": tf, "torch_step_s": ts, "fgvc_peak_mib": fm, "torch_peak_mib": tm})
        save()
    step = "forward + backward" if args.optimizer == "none" else f"training step with {args.optimizer}"
    where = "CUDA" if cuda else f"{args.threads} threads"
    print(f"seconds, median of {args.repeats}, {where}, {step}, amp {args.amp}; ratio = fgvc / PyTorch")
    save()

if __name__ == "__main__":
    main()
