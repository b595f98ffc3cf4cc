#!/usr/bin/python3
"""EMD side by side: fgvc-similarity against POT's ot.emd2, same problems, same machine.
POT's problem runs in this process (the interpreter and import already paid), so fgvc's
figure to compare is its own end-to-end time (total_seconds); its process wall time, exec to
exit, is printed beside it. This process is warm after the first repeat (its heap reused, its
BLAS threads started), while fgvc-similarity starts afresh each time; so POT also runs once a
repeat in a fresh interpreter, timed there from the same point as fgvc's total_seconds (after
the imports, before loading the files): the "cold" columns compare those.

Problems as the paper's use: Gaussian class means (d = 2048), Zipf-like class counts, sizes
1000 x 200, 6089 x 200 (ImageNet + iNat against a fine-grained target) and 5089 x 555.
Both sides run end to end: load the domain files, Euclidean distances in float64, exact
solve. POT's pivot count is found by bisection on numItermax (the fewest iterations that
reach the optimum). Needs Debian python3-pot and python3-numpy.

With --degenerate, also the problems whose pivots are mostly degenerate, as balanced data sets
and self-comparison make them: the three sizes with every class count 1, and a 5089-class domain
against itself.

With --opencv, OpenCV's cv2.EMD (Rubner's transportation simplex; Debian python3-opencv) runs
too, once per problem and end to end the same way. It is a speed peer only: it takes float32
weights and costs and stops at an iteration cap, so above about 200 classes its answer is above
the optimum; the table prints by how much.

With --spread, problems whose costs span ten orders of magnitude, against their optimum known by
construction: 1000 x 200 classes (d = 64) near the origin with one count each, and on either side
one class at the same far point (1e7 or 1e9 away, a little noise apart) with half the mass. The
far pair trades only with each other, so the optimum is half their distance plus half the near
problem's EMD (costs of order 1: POT solves it exactly). fgvc end to end from the domain files;
POT twice: with its own ot.dist distances, and with exact ones (differences, no cancellation).

With --batch K, the batched case too: K targets of 200 classes against one 6089-class source,
fgvc-similarity given all K targets at once (the CPU solves one target per core at a time)
against POT solving them one after another, each end to end; once, and throughput compared.

    /usr/bin/python3 bench/emd_vs_pot.py [--bin build/bin] [--sizes 1000x200,6089x200,5089x555] [--degenerate] [--opencv] [--spread]
                                         [--batch 64] [--device cuda] [--pricing rows]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import ot

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import safetensors_io  # noqa: E402


def write_domain(path, features, counts):
    """A domain file (SPEC.md section 5)."""
    names = json.dumps([f"class_{i}" for i in range(len(counts))])
    safetensors_io.save(path, {"features": np.asarray(features, dtype=np.float32), "counts": np.asarray(counts, dtype=np.int64)},
                        {"classes": names, "model": "synthetic", "layer": "gaussian"})


def read_domain(path):
    t = safetensors_io.load(path)
    return t["features"].astype(np.float64), t["counts"].astype(np.float64)


def distances(s, t):
    """Euclidean distances in float64, as both peers are given them."""
    m = ot.dist(s, t, metric="sqeuclidean")
    np.sqrt(np.maximum(m, 0), out=m)
    return m


def load_problem(source, target):
    """Both domain files read, their weights normalised, the distances: what each peer times."""
    s, a = read_domain(source)
    t, b = read_domain(target)
    return a / a.sum(), b / b.sum(), distances(s, t)


def pot_end_to_end(source, target):
    t0 = time.perf_counter()
    a, b, m = load_problem(source, target)
    t1 = time.perf_counter()
    cost = ot.emd2(a, b, m, numItermax=100_000_000)
    t2 = time.perf_counter()
    return cost, t2 - t0, t2 - t1, (a, b, m)


# A fresh interpreter's end-to-end time: imports first (as fgvc-similarity's libraries are loaded
# before its clock starts), then the same load, distances and solve as pot_end_to_end.
COLD = """
import sys, time
sys.path.insert(0, sys.argv[1])
import emd_vs_pot
t0 = time.perf_counter()
a, b, m = emd_vs_pot.load_problem(sys.argv[2], sys.argv[3])
emd_vs_pot.ot.emd2(a, b, m, numItermax=100_000_000)
print(time.perf_counter() - t0)
"""


def pot_cold(source, target):
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", COLD, here, source, target], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def opencv_end_to_end(source, target):
    """cv2.EMD with the same distances (DIST_USER: the cost matrix is given)."""
    import cv2
    t0 = time.perf_counter()
    a, b, m = load_problem(source, target)
    t1 = time.perf_counter()
    cost = cv2.EMD(a.astype(np.float32).reshape(-1, 1), b.astype(np.float32).reshape(-1, 1), cv2.DIST_USER,
                   m.astype(np.float32))[0]
    t2 = time.perf_counter()
    return cost, t2 - t0, t2 - t1


def pot_pivots(a, b, m, optimum):
    """The fewest numItermax with which POT reaches the optimum. POT's C++ code prints a warning
    on stderr each time the cap stops it; those are expected here, so stderr is closed meanwhile."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        return bisect_pivots(a, b, m, optimum)
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def bisect_pivots(a, b, m, optimum):
    lo, hi = 1, 1024
    while abs(ot.emd2(a, b, m, numItermax=hi) - optimum) > 1e-9 * optimum:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if abs(ot.emd2(a, b, m, numItermax=mid) - optimum) <= 1e-9 * optimum:
            hi = mid
        else:
            lo = mid + 1
    return lo


def fgvc_env(args):
    """fgvc-similarity's environment: this process's, with --fgvc-library-path as LD_LIBRARY_PATH
    (for fgvc's binaries alone: numpy and POT keep the system's libraries)."""
    env = dict(os.environ)
    if args.fgvc_library_path:
        env["LD_LIBRARY_PATH"] = args.fgvc_library_path
    return env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--device", default="cpu", help="fgvc-similarity's --device (cuda: the GPU solver)")
    ap.add_argument("--pricing", default="block", choices=["block", "rows"], help="fgvc-similarity's --pricing")
    ap.add_argument("--fgvc-library-path", help="LD_LIBRARY_PATH for fgvc-similarity alone (scripts/gpu-check.sh's bundle)")
    ap.add_argument("--sizes", default="1000x200,6089x200,5089x555",
                    help="MxN (Zipf-like counts), MxN:equal (every class count 1), M:self (a domain against itself)")
    ap.add_argument("--degenerate", action="store_true",
                    help="add the degenerate cases: 1000x200, 6089x200, 5089x555 with equal counts, 5089 against itself")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-pivot-count", action="store_true", help="skip the bisection for POT's pivots (slow on big problems)")
    ap.add_argument("--opencv", action="store_true", help="also time OpenCV's cv2.EMD (once a problem: it is slow)")
    ap.add_argument("--spread", action="store_true", help="also the far-pair problems (costs from 1 to 1e9), against the known optimum")
    ap.add_argument("--batch", type=int, default=0, help="also K targets of 200 classes against one 6089-class source")
    ap.add_argument("--batch-size", default="6089x200", help="source x target classes of the batched case")
    args = ap.parse_args()
    if args.opencv:
        try:
            import cv2  # noqa: F401
        except ImportError:
            sys.exit("emd_vs_pot.py: error: --opencv needs Debian's python3-opencv (apt-get install python3-opencv)")
    import warnings
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(2018)
    zipf = lambda k: np.maximum(1, (2000 / (rng.permutation(k) + 1) ** 1.0)).astype(np.int64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sizes = args.sizes.split(",")
        if args.degenerate:
            sizes += ["1000x200:equal", "6089x200:equal", "5089x555:equal", "5089:self"]
        for size in sizes:
            shape, _, kind = size.partition(":")
            src, tgt = os.path.join(tmp, f"s_{shape}_{kind}.safetensors"), os.path.join(tmp, f"t_{shape}_{kind}.safetensors")
            if kind == "self":  # balanced or not, most pivots of a domain against itself are degenerate
                m = int(shape)
                write_domain(src, rng.normal(size=(m, args.dim)), zipf(m))
                tgt = src
            else:
                m, n = map(int, shape.split("x"))
                equal = kind == "equal"  # a balanced dataset: most pivots are degenerate
                write_domain(src, rng.normal(size=(m, args.dim)), np.ones(m, np.int64) if equal else zipf(m))
                write_domain(tgt, rng.normal(size=(n, args.dim)) * 0.9 + 0.1, np.ones(n, np.int64) if equal else zipf(n))
            ours = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = subprocess.run([os.path.join(args.bin, "fgvc-similarity"), "--device", args.device,
                                      "--pricing", args.pricing, "--source", src, "--target", tgt, "--json"],
                                     check=True, capture_output=True, text=True, env=fgvc_env(args)).stdout
                wall = time.perf_counter() - t0
                ours.append((wall, json.loads(out.strip().splitlines()[-1])))
            pots = [pot_end_to_end(src, tgt) for _ in range(args.repeats)]
            colds = [pot_cold(src, tgt) for _ in range(args.repeats)]
            wall, j = min(ours, key=lambda x: x[0])
            pcost, pwall, psolve, problem = min(pots, key=lambda x: x[1])
            pivots = -1 if args.no_pivot_count else pot_pivots(*problem, pcost)
            total = min(o[1]["total_seconds"] for o in ours)
            rows.append((size, j["emd"], pcost, j["iterations"], j["solve_seconds"], total, wall, pivots, psolve, pwall,
                         min(colds), opencv_end_to_end(src, tgt) if args.opencv else None))
    print(f"{'problem':>14} {'differ by':>9} | {'fgvc pivots':>11} {'solve s':>8} {'total s':>8} {'process s':>9} | "
          f"{'POT pivots':>10} {'solve s':>8} {'total s':>8} {'cold s':>8} | {'solve x':>7} {'total x':>7} {'cold x':>7}")
    for size, e, p, it, sol, total, wall, piv, psol, pwall, pcold, _ in rows:
        # Relative, except near 0 (a domain against itself: POT's float64 distances of identical
        # points come out near 1e-7, not 0, so its EMD does too).
        diff = f"{abs(e - p) / p:9.1e}" if p > 1e-6 else f"{abs(e - p):5.1e}abs"
        print(f"{size:>14} {diff:>9} | {it:11d} {sol:8.3f} {total:8.3f} {wall:9.3f} | {piv:10d} {psol:8.3f} "
              f"{pwall:8.3f} {pcold:8.3f} | {psol / max(sol, 1e-6):7.2f} {pwall / total:7.2f} {pcold / total:7.2f}")
    print("total = load the files, distances, solve, timed inside each (fgvc-similarity's total_seconds; POT in this\n"
          "warm process); cold = POT's total in a fresh interpreter, after its imports (as fgvc's total_seconds is after\n"
          "its libraries load); process = fgvc-similarity's wall time from exec to exit; x = POT time / fgvc time;\n"
          "each the best of --repeats")
    if args.opencv:
        print(f"\n{'problem':>14} | {'cv2.EMD':>9} {'above optimum':>13} {'solve s':>8} {'total s':>8} | {'solve x':>7} {'total x':>7}")
        for size, e, p, it, sol, total, wall, piv, psol, pwall, _, (ccost, ctotal, csolve) in rows:
            print(f"{size:>14} | {ccost:9.4f} {(ccost - p) / p:12.3%} {csolve:8.3f} {ctotal:8.3f} | {csolve / sol:7.2f} "
                  f"{ctotal / total:7.2f}")
        print("cv2.EMD: OpenCV's transportation simplex, float32, run once; above optimum = (cv2 - POT) / POT;\n"
              "x = cv2 time / fgvc time")
    if args.spread:
        spread(args)
    if args.batch > 0:
        batched(args, rng, zipf)


def exact_distances(s, t):
    """Euclidean distances from the differences themselves (no cancellation), a row at a time."""
    return np.stack([np.sqrt(((t - x) ** 2).sum(axis=1)) for x in s])


def spread(args):
    """The far-pair problems (see the module's docstring): each answer against the optimum."""
    m, n, dim = 1000, 200, 64
    print(f"\nfar pair, {m} x {n}, d = {dim}: relative error against the optimum known by construction")
    print(f"{'far':>6} {'seed':>4} {'optimum':>12} | {'fgvc':>8} {'pivots':>6} | {'POT, ot.dist':>12} {'POT, exact':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        src, tgt = os.path.join(tmp, "s.safetensors"), os.path.join(tmp, "t.safetensors")
        for far in (1e7, 1e9):
            for seed in range(3):
                rng = np.random.default_rng(seed)
                s, t = rng.normal(size=(m, dim)), rng.normal(size=(n, dim))
                point = rng.normal(size=dim) * far
                s[0] += point
                t[0] += point
                a, b = np.ones(m, np.int64), np.ones(n, np.int64)
                a[0], b[0] = m - 1, n - 1
                write_domain(src, s, a)
                write_domain(tgt, t, b)
                # What both read back: the features as float32, widened.
                s, a = read_domain(src)
                t, b = read_domain(tgt)
                exact = exact_distances(s, t)
                near = exact[1:, 1:]
                optimum = 0.5 * exact[0, 0] + 0.5 * ot.emd2(np.full(m - 1, 1 / (m - 1)), np.full(n - 1, 1 / (n - 1)), near,
                                                             numItermax=100_000_000)
                out = json.loads(subprocess.run([os.path.join(args.bin, "fgvc-similarity"), "--device", args.device,
                                                 "--pricing", args.pricing, "--source", src, "--target", tgt, "--json"],
                                                check=True, capture_output=True, text=True,
                                                env=fgvc_env(args)).stdout.strip().splitlines()[-1])
                pot_own = ot.emd2(a / a.sum(), b / b.sum(), distances(s, t), numItermax=100_000_000)
                pot_exact = ot.emd2(a / a.sum(), b / b.sum(), exact, numItermax=100_000_000)
                rel = lambda x: (x - optimum) / optimum
                print(f"{far:6.0e} {seed:4d} {optimum:12.6f} | {rel(out['emd']):8.1e} {out['iterations']:6d} | "
                      f"{rel(pot_own):12.1e} {rel(pot_exact):10.1e}")
    print("relative error = (answer - optimum) / optimum; the optimum's own rounding is about 1e-15")


def batched(args, rng, zipf):
    """K targets against one source: fgvc-similarity with all of them, POT one after another."""
    m, n = map(int, args.batch_size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "source.safetensors")
        write_domain(src, rng.normal(size=(m, args.dim)), zipf(m))
        tgts = []
        for k in range(args.batch):
            tgts.append(os.path.join(tmp, f"target{k}.safetensors"))
            write_domain(tgts[-1], rng.normal(size=(n, args.dim)) * 0.9 + 0.1 * (k % 7), zipf(n))
        cmd = [os.path.join(args.bin, "fgvc-similarity"), "--device", args.device, "--pricing", args.pricing,
               "--source", src, "--json"]
        for t in tgts:
            cmd += ["--target", t]
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                        env=fgvc_env(args)).stdout.strip().splitlines()[-1])
        ours = [r["emd"] for r in out["targets"]]
        t0 = time.perf_counter()
        s, a = read_domain(src)  # once, as fgvc-similarity does
        pots = []
        for path in tgts:
            t, b = read_domain(path)
            pots.append(ot.emd2(a / a.sum(), b / b.sum(), distances(s, t), numItermax=100_000_000))
        pot_total = time.perf_counter() - t0
    worst = max(abs(e - p) / p for e, p in zip(ours, pots))
    total = out["total_seconds"]
    print(f"\nbatched: {args.batch} targets of {n} classes against one {m}-class source, end to end, once")
    print(f"{'':>10} {'total s':>8} {'problems/s':>10} | worst rel diff")
    print(f"{'fgvc':>10} {total:8.3f} {args.batch / total:10.2f} | {worst:.1e}")
    print(f"{'POT':>10} {pot_total:8.3f} {args.batch / pot_total:10.2f} |")
    print(f"throughput x = {pot_total / total:.2f} (fgvc's CPU solver, every core; POT loads the source once, then each "
          f"target in turn: its file, distances, solve)")


if __name__ == "__main__":
    main()
