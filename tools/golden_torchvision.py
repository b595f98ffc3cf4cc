#!/usr/bin/python3
"""Golden check against torchvision: the same weights and inputs through torchvision and
through fgvc-infer, logits compared by relative error (norm).

Full size (a developer run, minutes on a CPU):
    /usr/bin/python3 tools/golden_torchvision.py --bin build/bin
With --fixture it instead writes tests/data/golden_blocks.safetensors: single blocks of each kind
(a ResNet bottleneck with downsampling, Inception-v3 blocks A, B and C, a stem BasicConv2d), with
random weights, random batch-norm statistics, inputs and torchvision's outputs, small enough to
commit, so that agreement with torchvision is checked by ctest on every CI run.

Needs Debian python3-torch and python3-torchvision (never the build or CI).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def randomize_bn(module, gen):
    """Non-trivial batch-norm statistics and affine parameters, so eval mode is really tested."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def state(module, prefix):
    return {prefix + k: v.detach().numpy() for k, v in module.state_dict().items()}


def fixture(path):
    gen = torch.Generator().manual_seed(2018)
    torch.manual_seed(2018)
    from torchvision.models import inception, resnet
    blocks = {
        "bottleneck": (resnet.Bottleneck(32, 16, stride=2, downsample=torch.nn.Sequential(
            torch.nn.Conv2d(32, 64, 1, stride=2, bias=False), torch.nn.BatchNorm2d(64))), (2, 32, 9, 9)),
        "inception_a": (inception.InceptionA(24, pool_features=8), (2, 24, 7, 7)),
        "inception_b": (inception.InceptionB(16), (2, 16, 9, 9)),
        "inception_c": (inception.InceptionC(32, channels_7x7=8), (2, 32, 8, 8)),
        "basic_conv": (inception.BasicConv2d(3, 8, kernel_size=3, stride=2), (2, 3, 11, 11)),
    }
    tensors = {}
    for name, (block, shape) in blocks.items():
        block.eval()
        randomize_bn(block, gen)
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            y = block(x)
        tensors.update(state(block, name + "."))
        tensors[name + ".__input"] = x.numpy()
        tensors[name + ".__output"] = y.numpy()
    safetensors_io.save(path, tensors, {"generator": "tools/golden_torchvision.py --fixture",
                                        "torch": torch.__version__, "torchvision": torchvision.__version__})
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def full(binary):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cases = [("resnet50", torchvision.models.resnet50(), 224),
             ("inception_v3", torchvision.models.inception_v3(aux_logits=True, init_weights=True), 299)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, size in cases:
            model.eval()
            randomize_bn(model, gen)
            x = torch.randn(2, 3, size, size, generator=gen)
            with torch.no_grad():
                want = model(x).numpy()
            w, xi, yo = (os.path.join(tmp, f) for f in ("w.safetensors", "x.safetensors", "y.safetensors"))
            safetensors_io.save(w, state(model, ""))
            safetensors_io.save(xi, {"input": x.numpy()})
            subprocess.run([binary, "--device", "cpu", "--model", name, "--weights", w, "--input", xi, "--output", yo],
                           check=True)
            got = safetensors_io.load(yo)["logits"]
            err = np.linalg.norm(got - want) / np.linalg.norm(want)
            print(f"{name:>14} at {size}: relative error of the logits {err:.2e}  ({'ok' if err < 1e-4 else 'FAIL'})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--fixture", help="write the CI fixture to this path instead")
    args = ap.parse_args()
    if args.fixture:
        fixture(args.fixture)
    else:
        full(os.path.join(args.bin, "fgvc-infer"))


if __name__ == "__main__":
    main()
