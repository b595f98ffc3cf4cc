#!/usr/bin/env python3
"""Plots of an fgvc-train run folder (SPEC.md section 5), written beside its metrics:

  loss.png       training loss per logged step (and per epoch)
  accuracy.png   validation top-1 / top-5 per epoch (when the run had --val)
  per_class.png  per-class validation accuracy against training images per class, classes
                 sorted by their number of training images (the paper's Figs. 2 and 4)

Usage: plot_run.py [--out DIR] RUN_DIR [RUN_DIR ...]
Several folders: one curve each (e.g. stage 1 and stage 2), written to the first folder or DIR.
Exit 3 when matplotlib is missing (Debian: apt-get install python3-matplotlib).
"""
import csv
import json
import os
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("plot_run.py: python3-matplotlib is not installed", file=sys.stderr)
    sys.exit(3)


def read_metrics(run):
    steps, epochs = [], []
    path = os.path.join(run, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                j = json.loads(line)
                if j.get("kind") == "step":
                    steps.append(j)
                elif j.get("kind") == "epoch":
                    epochs.append(j)
    return steps, epochs


def read_per_class(run):
    path = os.path.join(run, "per_class.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [r for r in csv.DictReader(f) if r["train_images"] != ""]


def main(runs, out):
    label = lambda run: os.path.basename(os.path.normpath(run))
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        steps, _ = read_metrics(run)
        if steps:
            ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], label=label(run))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss.png"), dpi=110)
    plt.close(fig)

    if any(any("val_top1" in e for e in read_metrics(r)[1]) for r in runs):
        fig, ax = plt.subplots(figsize=(6, 4))
        for run in runs:
            ep = [e for e in read_metrics(run)[1] if "val_top1" in e]
            if ep:
                x = [e["step"] for e in ep]
                ax.plot(x, [100 * e["val_top1"] for e in ep], marker="o", label=label(run) + " top-1")
                ax.plot(x, [100 * e["val_top5"] for e in ep], marker=".", ls="--", label=label(run) + " top-5")
        ax.set_xlabel("step")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "accuracy.png"), dpi=110)
        plt.close(fig)

    tables = [(run, read_per_class(run)) for run in runs]
    tables = [(run, rows) for run, rows in tables if rows]
    if tables:
        fig, ax1 = plt.subplots(figsize=(7, 4))
        ax2 = ax1.twinx()
        rows0 = sorted(tables[0][1], key=lambda r: -int(r["train_images"]))
        order = [r["class"] for r in rows0]
        x = range(len(order))
        ax2.bar(x, [int(r["train_images"]) for r in rows0], color="0.85", label="training images")
        ax2.set_ylabel("training images per class")
        for run, rows in tables:
            by = {r["class"]: r for r in rows}
            ax1.plot(x, [100 * float(by[c]["top1"]) if c in by else float("nan") for c in order],
                     marker="o", label=label(run) + " top-1")
        ax1.set_zorder(ax2.get_zorder() + 1)
        ax1.patch.set_visible(False)
        ax1.set_xlabel("classes, by training images (most first)")
        ax1.set_ylabel("validation top-1 (%)")
        ax1.set_ylim(0, 100)
        if len(order) <= 30:
            ax1.set_xticks(list(x))
            ax1.set_xticklabels(order, rotation=60, ha="right", fontsize=7)
        ax1.legend(loc="lower left")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "per_class.png"), dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    args = sys.argv[1:]
    out = None
    if len(args) >= 2 and args[0] == "--out":
        out, args = args[1], args[2:]
    if not args:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(args, out or args[0])
