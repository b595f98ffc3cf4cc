#!/usr/bin/python3
"""Writes tests/data/emd_pot_fixtures.json: EMD problems with POT's exact answers.

Developer tool (needs Debian python3-pot and python3-numpy); CI only reads the JSON, so the
exactness test runs without Python. Features are rounded to 4 decimals so that the numbers
in the JSON are exactly what both sides compute with. Distances are computed here by exact
differences, and the EMD by POT's network simplex (ot.emd2) with both weight vectors
normalised to 1, the paper's convention.

    /usr/bin/python3 scripts/emd_fixtures.py > tests/data/emd_pot_fixtures.json
"""
import json
import sys

import numpy as np
import ot


def distances(s, t):
    return np.sqrt(((s[:, None, :] - t[None, :, :]) ** 2).sum(-1))


def zipf_counts(rng, k, top=500):
    ranks = rng.permutation(k) + 1
    return np.maximum(1, (top / ranks ** 1.1).astype(np.int64))


def problem(name, a, b, s=None, t=None, cost=None):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m = cost if cost is not None else distances(s, t)
    value = ot.emd2(a / a.sum(), b / b.sum(), m, numItermax=100_000_000)
    out = {"name": name, "a": a.tolist(), "b": b.tolist(), "pot_cost": float(value)}
    if cost is not None:
        out["cost"] = cost.tolist()
    else:
        out["source"] = s.tolist()
        out["target"] = t.tolist()
    return out


def main():
    rng = np.random.default_rng(2018)
    feats = lambda k, d, shift=0.0: np.round(rng.normal(size=(k, d)) + shift, 4)
    probs = []
    for i, (m, n, d) in enumerate([(5, 4, 3), (20, 10, 8), (40, 25, 16), (80, 60, 8), (64, 16, 32), (7, 70, 4)]):
        probs.append(problem(f"gaussian_zipf_{m}x{n}_d{d}", zipf_counts(rng, m), zipf_counts(rng, n),
                             feats(m, d), feats(n, d, 0.5)))
    # Equal weights with m a multiple of n: degenerate at every step of a greedy start.
    probs.append(problem("equal_weights_48x12", np.ones(48), np.ones(12), feats(48, 6), feats(12, 6)))
    probs.append(problem("equal_weights_square_30", np.ones(30), np.ones(30), feats(30, 5), feats(30, 5)))
    # Duplicate points: repeated source rows, and targets that coincide with sources.
    s = feats(12, 6)
    s = np.concatenate([s, s[:5]])
    probs.append(problem("duplicate_points", rng.integers(1, 9, 17), rng.integers(1, 9, 9), s, s[[0, 1, 2, 3, 13, 14, 7, 8, 9]]))
    # Integer costs with many ties.
    for k, (m, n) in enumerate([(10, 10), (30, 12), (25, 40)]):
        c = rng.integers(0, 5, size=(m, n)).astype(np.float64)
        probs.append(problem(f"integer_cost_ties_{m}x{n}", rng.integers(1, 4, m), rng.integers(1, 4, n), cost=c))
    # A class of weight zero on each side.
    a, b = zipf_counts(rng, 15), zipf_counts(rng, 9)
    a[3] = 0
    b[0] = 0
    probs.append(problem("zero_weight_class", a, b, feats(15, 7), feats(9, 7)))
    # One source class, one target class, and one of each.
    probs.append(problem("one_source", [3], zipf_counts(rng, 20), feats(1, 8), feats(20, 8)))
    probs.append(problem("one_target", zipf_counts(rng, 20), [1], feats(20, 8), feats(1, 8)))
    probs.append(problem("one_by_one", [2], [5], feats(1, 8), feats(1, 8)))
    # Unequal totals (normalised) and very uneven weights.
    probs.append(problem("uneven_weights", [1e-6, 1, 1000, 3], [7, 1e-3, 50], feats(4, 3), feats(3, 3)))
    json.dump({"generator": "scripts/emd_fixtures.py", "pot_version": ot.__version__, "problems": probs},
              sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
