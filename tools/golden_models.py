#!/usr/bin/python3
"""Golden check of whole models against their reference implementations: torchvision's
resnet50 and inception_v3, timm's inception_v4, inception_resnet_v2, resnetv2_50 and
seresnet50. Each side fills every tensor of the model's state_dict from the same counter-based
generator (below: a value depends only on the tensor's name and its index, so C++ makes the
same weights from the names alone) and runs the same generated input in evaluation mode.

With --fixture PATH it writes tests/data/golden_models.safetensors: for each model the
reference's state_dict names and shapes (which fgvc's must equal: timm/torchvision files load
by name), its logits and pooled features in evaluation mode (float32) at a small input size,
and in training mode (float64) its pooled features and a summary of every parameter's
gradient; tests/test_golden.cpp regenerates the weights and inputs and compares, on every CI
run, without Python.
Without --fixture it runs each model at its full input size (299 or 224) through fgvc-infer
(a developer run: minutes on a CPU, a few GB of memory) and prints the relative errors.

Needs Debian python3-torch and python3-torchvision, and timm's source (a checkout of
github.com/huggingface/pytorch-image-models, --timm PATH; pure Python): never the build or CI.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

# (fgvc --model name, reference library, fixture input size). Odd sizes so that padding and
# ceil-mode pooling take their uneven paths.
MODELS = [("resnet50", "torchvision", 67), ("inception_v3", "torchvision", 99), ("inception_v4", "timm", 99),
          ("inception_resnet_v2", "timm", 99), ("resnetv2_50", "timm", 67), ("seresnet50", "timm", 67)]
# The deeper variants share their blocks with the models above: only their state_dict names and
# shapes are recorded (and checked, without a forward).
NAMES_ONLY = [("resnet101", "torchvision"), ("resnet152", "torchvision"), ("resnetv2_101", "timm"),
              ("resnetv2_152", "timm")]
FULL_SIZE = {"resnet50": 224, "resnetv2_50": 224, "seresnet50": 224}  # the rest: 299
# The training-mode check's input size: batch norm then normalises by the batch's statistics,
# which need a few values per channel even on the last grid (2 x 2 and up here).
TRAIN_SIZE = {"resnet50": 67, "resnetv2_50": 67, "seresnet50": 67}  # the rest: 131
BATCH = 2
MASK = (1 << 64) - 1


def name_key(name):
    """FNV-1a, 64-bit, of the name's UTF-8 bytes."""
    h = 14695981039346656037
    for c in name.encode():
        h = ((h ^ c) * 1099511628211) & MASK
    return h


def counter_uniform(name, count):
    """count doubles in [0, 1): splitmix64's finaliser of key + (k + 1) * golden ratio, top 53 bits."""
    with np.errstate(over="ignore"):
        z = np.uint64(name_key(name)) + (np.arange(count, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def golden_tensor(name, shape):
    """The value of one state_dict tensor (tests/test_golden.cpp's golden_tensor, the same rule):
    weights of convolutions and linear layers He-uniform by fan-in, batch-norm scales around 1,
    biases and running means small, running variances in [0.5, 1.5] (small enough that a wrong
    epsilon shows, large enough that activations keep their scale), step counters 0. Computed in float64, rounded once to float32."""
    shape = tuple(int(s) for s in shape)
    count = int(np.prod(shape)) if shape else 1
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    u = counter_uniform(name, count)
    if leaf == "running_var":
        v = 0.5 + u
    elif leaf == "running_mean" or leaf == "bias":
        v = 0.1 * (2.0 * u - 1.0)
    elif leaf == "weight" and len(shape) >= 2:
        v = (2.0 * u - 1.0) * np.sqrt(6.0 / (count // shape[0]))
    elif leaf == "weight":
        v = 1.0 + 0.25 * (2.0 * u - 1.0)
    else:
        raise SystemExit(f"golden_models.py: error: no rule for tensor {name}")
    return v.astype(np.float32).reshape(shape)


def golden_input(model, size):
    """The input batch [BATCH, 3, size, size], pixels in [-1, 1]."""
    return (2.0 * counter_uniform(f"__input.{model}.{size}", BATCH * 3 * size * size) - 1.0).astype(
        np.float32).reshape(BATCH, 3, size, size)


def reference_model(name, library):
    """The reference's model, in evaluation mode, and its name and version."""
    if library == "torchvision":
        import torchvision
        if name == "inception_v3":
            model = torchvision.models.inception_v3(aux_logits=True, init_weights=False)
        else:
            model = getattr(torchvision.models, name)()
        version = "torchvision " + torchvision.__version__
    else:
        try:
            import timm
        except ImportError:
            sys.exit(f"golden_models.py: {name} needs timm: install it, or give --timm PATH_TO_ITS_SOURCE")
        model = timm.create_model(name)
        version = "timm " + timm.__version__
    return model.eval(), version


def reference(name, library):
    import torch
    model, version = reference_model(name, library)
    state = {k: golden_tensor(k, v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model, state, version


def run_reference(model, x):
    """Logits and the classifier's input (the pooled features), flattened to [N, D]."""
    import torch
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else model.fc
    seen = {}

    def keep_input(module, inputs, output):  # returns None: the output stays as it is
        seen["features"] = inputs[0]
    hook = classifier.register_forward_hook(keep_input)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    hook.remove()
    return logits.reshape(logits.shape[0], -1).numpy(), seen["features"].reshape(x.shape[0], -1).numpy()


def gradient_summary(model, features, name):
    """Backward of loss = sum(features * cotangent), then each parameter's gradient as two
    numbers: its norm and its dot product with a probe generated from the parameter's name
    (parameters the loss does not reach are not listed)."""
    import torch
    cotangent = 2.0 * counter_uniform(f"__cotangent.{name}", features.numel()) - 1.0
    cotangent = torch.from_numpy(cotangent.astype(np.float32)).to(features.dtype).reshape(features.shape)
    (features * cotangent).sum().backward()
    names, norms, dots = [], [], []
    for pname, p in model.named_parameters():
        if p.grad is None:
            continue
        g = p.grad.double().numpy().ravel()
        probe = (2.0 * counter_uniform("__probe." + pname, g.size) - 1.0).astype(np.float32).astype(np.float64)
        names.append(pname)
        norms.append(np.linalg.norm(g))
        dots.append(g @ probe)
    return names, np.array(norms), np.array(dots)


def gradient_error(norms, dots, want_norms, want_dots):
    """The worst parameter's error (tests/test_golden.cpp's measure): norm and dot product against
    the reference's, relative to its norm plus 1e-6 of the largest (a gradient that is 0 in exact
    arithmetic, such as a bias before a batch norm, is rounding on every side)."""
    scale = want_norms + 1e-6 * want_norms.max()
    return float(np.max(np.maximum(np.abs(norms - want_norms), np.abs(dots - want_dots)) / scale))


def train_reference(model, name, x):
    """Training mode, where batch norm normalises by the batch's statistics: the pooled features
    (before any dropout: dropout is off) and the gradients of sum(features * cotangent) (the
    classifier left out; Inception-v3's auxiliary head off), in float64: tests/test_golden.cpp
    runs fgvc in float64 too. Also how far PyTorch's own float32 run is from that, for the
    record: random weights in training mode amplify rounding (each layer's batch statistics
    pass it on, and a ReLU input near 0 flips), too much for a float32 comparison to be tight."""
    import copy
    import torch
    if hasattr(model, "aux_logits"):
        model.aux_logits, model.AuxLogits = False, None
    runs = []
    for dtype in (torch.float32, torch.float64):
        m = copy.deepcopy(model).to(dtype)
        m.train()
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.eval()
        classifier = m.get_classifier() if hasattr(m, "get_classifier") else m.fc
        seen = {}

        def keep_input(module, inputs, output):
            seen["features"] = inputs[0]
        hook = classifier.register_forward_hook(keep_input)
        m(torch.from_numpy(x).to(dtype))
        hook.remove()
        features = seen["features"].reshape(x.shape[0], -1)
        runs.append((features.detach().double().numpy(), *gradient_summary(m, features, name)))
        if dtype == torch.float64:
            stats = running_stats_summary(m)
    (f32, names32, n32, d32), (f64, names, n64, d64) = runs
    assert names32 == names
    feature_error = float(np.linalg.norm(f32 - f64) / np.linalg.norm(f64))
    return f64, names, n64, d64, feature_error, gradient_error(n32, d32, n64, d64), stats


def running_stats_summary(model):
    """Batch norm's running means and variances after the training-mode forward (momentum 0.1,
    the variance unbiased, as PyTorch and TF's fused batch norm keep them): each as its norm and
    its dot product with a probe generated from its name."""
    names, norms, dots = [], [], []
    for bname, b in model.named_buffers():
        if bname.endswith("running_mean") or bname.endswith("running_var"):
            v = b.double().numpy().ravel()
            probe = (2.0 * counter_uniform("__probe." + bname, v.size) - 1.0).astype(np.float32).astype(np.float64)
            names.append(bname)
            norms.append(np.linalg.norm(v))
            dots.append(v @ probe)
    return names, np.array(norms), np.array(dots)


# Inception-v3's auxiliary classifier runs only in training mode, on Mixed_6e's 17 x 17 grid (an
# input of 299 or more): the whole-model checks leave it off. It is checked on its own, with the
# model's own golden weights (AuxLogits.*) on generated inputs: in evaluation mode at 17 x 17
# (float32), and in training mode at 23 x 23 (float64), where the 5x5/3 pool leaves 7 x 7 and its
# 5 x 5 convolution 3 x 3, so that the last batch norm sees more than two values per channel.
AUX_EVAL_SIZE, AUX_TRAIN_SIZE, AUX_CHANNELS = 17, 23, 768


def aux_input(size):
    return (2.0 * counter_uniform(f"__aux_input.inception_v3.{size}", BATCH * AUX_CHANNELS * size * size) - 1.0).astype(
        np.float32).reshape(BATCH, AUX_CHANNELS, size, size)


def aux_reference(model):
    """The auxiliary head's logits in both modes, and in training mode (float64) the gradient
    summary of loss = sum(logits * cotangent) and the running statistics, named as in the
    model's state_dict (AuxLogits.conv0.conv.weight, ...)."""
    import copy
    import torch
    head = copy.deepcopy(model.AuxLogits).eval()
    with torch.no_grad():
        eval_logits = head(torch.from_numpy(aux_input(AUX_EVAL_SIZE))).numpy()
    wrapper = torch.nn.Module()  # so that the names carry the model's prefix
    wrapper.AuxLogits = copy.deepcopy(model.AuxLogits).double().train()
    logits = wrapper.AuxLogits(torch.from_numpy(aux_input(AUX_TRAIN_SIZE)).double())
    names, norms, dots = gradient_summary(wrapper, logits, "inception_v3.aux")
    stats = running_stats_summary(wrapper)
    return eval_logits, logits.detach().numpy(), names, norms, dots, stats


def fixture(path):
    import torch
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tensors, metadata = {}, {"generator": "tools/golden_models.py --fixture", "torch": torch.__version__}
    for name, library, size in MODELS:
        model, state, version = reference(name, library)
        logits, features = run_reference(model, golden_input(name, size))
        tensors[name + ".logits"] = logits
        tensors[name + ".features"] = features
        metadata[name + ".reference"] = version
        metadata[name + ".input_size"] = str(size)
        metadata[name + ".state"] = json.dumps([[k, list(v.shape)] for k, v in state.items()])
        if name == "inception_v3":  # before train_reference, which takes the head off
            eval_logits, train_logits, aux_names, aux_norms, aux_dots, (aux_stats, aux_stat_norms, aux_stat_dots) = \
                aux_reference(model)
            tensors[name + ".aux.logits"] = eval_logits
            tensors[name + ".aux.train.logits"] = train_logits
            tensors[name + ".aux.train.grad_norms"] = aux_norms
            tensors[name + ".aux.train.grad_dots"] = aux_dots
            tensors[name + ".aux.train.stat_norms"] = aux_stat_norms
            tensors[name + ".aux.train.stat_dots"] = aux_stat_dots
            metadata[name + ".aux.train.parameters"] = json.dumps(aux_names)
            metadata[name + ".aux.train.stats"] = json.dumps(aux_stats)
            metadata[name + ".aux.input_sizes"] = json.dumps([AUX_EVAL_SIZE, AUX_TRAIN_SIZE])
        train_size = TRAIN_SIZE.get(name, 131)
        features, names, norms, dots, f32_error, g32_error, (stat_names, stat_norms, stat_dots) = train_reference(
            model, name, golden_input(name, train_size))
        tensors[name + ".train.stat_norms"] = stat_norms
        tensors[name + ".train.stat_dots"] = stat_dots
        metadata[name + ".train.stats"] = json.dumps(stat_names)
        tensors[name + ".train.features"] = features
        tensors[name + ".train.grad_norms"] = norms
        tensors[name + ".train.grad_dots"] = dots
        metadata[name + ".train.input_size"] = str(train_size)
        metadata[name + ".train.parameters"] = json.dumps(names)
        metadata[name + ".train.float32_feature_error"] = repr(f32_error)
        metadata[name + ".train.float32_gradient_error"] = repr(g32_error)
        print(f"{name:>20}: {version}, {len(state)} tensors, logits {logits.shape}, features {features.shape}; "
              f"training mode at {train_size}: {len(names)} gradients, PyTorch's float32 off its float64 by "
              f"{f32_error:.1e} (features), {g32_error:.1e} (gradients)")
    for name, library in NAMES_ONLY:
        model, version = reference_model(name, library)
        metadata[name + ".reference"] = version
        metadata[name + ".state"] = json.dumps([[k, list(v.shape)] for k, v in model.state_dict().items()])
        print(f"{name:>20}: {version}, {len(model.state_dict())} tensors (names and shapes only)")
    safetensors_io.save(path, tensors, metadata)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def full(binary):
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, library, _ in MODELS:
            size = FULL_SIZE.get(name, 299)
            model, state, version = reference(name, library)
            x = golden_input(name, size)
            want_logits, want_features = run_reference(model, x)
            w, xi, yo = (os.path.join(tmp, f) for f in ("w.safetensors", "x.safetensors", "y.safetensors"))
            safetensors_io.save(w, state)
            safetensors_io.save(xi, {"input": x})
            subprocess.run([binary, "--device", "cpu", "--model", name, "--weights", w, "--input", xi, "--output", yo],
                           check=True, stdout=subprocess.DEVNULL)
            got = safetensors_io.load(yo)
            errs = [np.linalg.norm(got[k] - want) / np.linalg.norm(want)
                    for k, want in (("logits", want_logits), ("features", want_features))]
            ok = max(errs) < 1e-4
            failed += not ok
            print(f"{name:>20} at {size} against {version}: relative error of the logits {errs[0]:.2e}, "
                  f"of the features {errs[1]:.2e}  ({'ok' if ok else 'FAIL'})", flush=True)
    return failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--timm", help="a source checkout of timm (pytorch-image-models), if timm is not installed")
    ap.add_argument("--fixture", help="write the CI fixture to this path instead")
    args = ap.parse_args()
    if args.timm:
        sys.path.insert(0, args.timm)
    if args.fixture:
        fixture(args.fixture)
    else:
        sys.exit(1 if full(os.path.join(args.bin, "fgvc-infer")) else 0)


if __name__ == "__main__":
    main()
