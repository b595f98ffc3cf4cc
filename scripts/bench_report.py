#!/usr/bin/env python3
"""Markdown tables from the JSON of bench_gemm and bench_elementwise (Google Benchmark),
optionally beside scripts/bench_torch.py's JSON, and a table of GoogleTest runs.

Benchmark names are <device>/<impl>/<layout>/<MxNxK> (GEMM) and <device>/<op>/<size>
(elementwise); rows keep the order the benchmarks were registered in. With repetitions the
median is shown, and "cv %" is the coefficient of variation (the noise: a difference smaller
than it means nothing), the largest among a GEMM row's runs. "overhead %" is the extra time over
the baseline, baseline rate / our rate - 1. Baselines: bare OpenBLAS (CPU GEMM), PyTorch (CUDA
GEMM, and CUDA ops when given), memcpy (CPU ops) and Tensor::clone (CUDA ops).
Standard library only.
"""
import argparse
import json
import os


def load_benchmarks(path, device):
    """({name: {"rate": {...}, "cv": {...}, "error": str}} for one device in registration order, note).

    The name drops the /real_time or /manual_time suffix; "rate" holds the median run
    (or the only run) and "cv" the coefficient-of-variation aggregate when there is one. The note
    says when the file was cut short (None otherwise).
    """
    with open(path) as f:
        text = f.read()
    try:
        runs = json.loads(text)["benchmarks"]
        note = None
    except (ValueError, KeyError):  # a bench stopped by its timeout leaves half a file: keep its whole runs
        runs = recover_runs(text)
        note = f"{os.path.basename(path)} was cut short (its timeout): {len(runs)} finished runs shown"
    runs = sorted(runs, key=lambda r: r.get("family_index", 0))
    out = {}
    for r in runs:
        name = r.get("run_name", r["name"])
        for suffix in ("/real_time", "/manual_time"):
            name = name.removesuffix(suffix)
        if not name.startswith(device + "/"):
            continue
        entry = out.setdefault(name, {})
        if r.get("error_occurred"):
            entry["error"] = r["error_message"]
        elif r.get("aggregate_name") == "cv":
            entry["cv"] = r
        elif r.get("aggregate_name", "median") == "median":
            entry["rate"] = r
    return out, note


def recover_runs(text):
    """The complete run objects of a Google Benchmark JSON file that was cut off mid-write."""
    start = text.find('"benchmarks"')
    start = text.find("[", start) if start >= 0 else -1
    decoder, runs, at = json.JSONDecoder(), [], start + 1
    while start >= 0:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        try:
            run, at = decoder.raw_decode(text, at)
        except ValueError:
            break
        runs.append(run)
    return runs


def fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def overhead(ours, base):
    return None if not ours or not base else (base / ours - 1.0) * 100.0


def value(entries, name, key, scale):
    """The median of counter `key` divided by `scale`, or None."""
    run = entries.get(name, {}).get("rate")
    return None if run is None else run[key] / scale


def spread(entries, names, key):
    """The largest cv (in %) of counter `key` among `names`, or None without repetitions."""
    cvs = [entries[n]["cv"][key] * 100.0 for n in names if "cv" in entries.get(n, {})]
    return max(cvs) if cvs else None


def gemm_table(device, entries, torch):
    rows = []  # (layout, shape) in registration order
    for name in entries:
        _, _, layout, shape = name.split("/")
        if (layout, shape) not in rows:
            rows.append((layout, shape))
    base_name = "OpenBLAS" if device == "cpu" else "PyTorch"
    lines = [f"| M x N x K | layout | fgvc gemm GFLOP/s | fgvc matmul GFLOP/s | {base_name} GFLOP/s "
             "| gemm overhead % | matmul overhead % | cv % |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for layout, shape in rows:
        names = [f"{device}/{impl}/{layout}/{shape}" for impl in ("fgvc_gemm", "fgvc_matmul", "openblas")]
        gemm, matmul, base = (value(entries, n, "FLOPS", 1e9) for n in names)
        if device == "cuda":
            base = torch.get("gemm", {}).get(f"{layout}/{shape}", {}).get("gflops")
        lines.append(f"| {shape} | {layout} | {fmt(gemm)} | {fmt(matmul)} | {fmt(base)} "
                     f"| {fmt(overhead(gemm, base))} | {fmt(overhead(matmul, base))} "
                     f"| {fmt(spread(entries, names, 'FLOPS'), 0)} |")
    return lines


def elementwise_table(device, entries, torch):
    baseline = "memcpy" if device == "cpu" else "clone"
    lines = [f"| op | size | GB/s | % of {baseline} | cv % |" + (" PyTorch GB/s | overhead vs PyTorch % |" if torch else ""),
             "|---|---|---:|---:|---:|" + ("---:|---:|" if torch else "")]
    for name in entries:
        _, op, size = name.split("/")
        base_name = f"{device}/{baseline}/{size}"
        ours = value(entries, name, "bytes_per_second", 1e9)
        base = value(entries, base_name, "bytes_per_second", 1e9)
        share = None if not ours or not base else 100.0 * ours / base
        row = f"| {op} | {size} | {fmt(ours)} | {fmt(share, 0)} | {fmt(spread(entries, [name], 'bytes_per_second'), 0)} |"
        if torch:
            theirs = torch.get("elementwise", {}).get(f"{op}/{size}", {}).get("gbps")
            row += f" {fmt(theirs)} | {fmt(overhead(ours, theirs))} |"
        lines.append(row)
    return lines


def tests_table(exit_codes_path):
    """One row per test executable from lines "<name> <exit code> [note]" and <name>.json beside them."""
    lines = ["| test executable | exit code | tests | failed | skipped | seconds | failing |", "|---|---:|---:|---:|---:|---:|---|"]
    folder = os.path.dirname(exit_codes_path)
    with open(exit_codes_path) as f:
        rows = [line.strip().split(maxsplit=2) for line in f if line.strip()]
    for name, code, *note in rows:
        code = " ".join([code] + note)
        report = os.path.join(folder, name + ".json")
        if not os.path.exists(report):
            lines.append(f"| {name} | {code} | no report | | | | |")
            continue
        try:
            with open(report) as f:
                r = json.load(f)
        except ValueError:  # a run killed mid-write
            lines.append(f"| {name} | {code} | unreadable report | | | | |")
            continue
        skipped = sum(1 for s in r.get("testsuites", []) for t in s.get("testsuite", [])
                      if t.get("result") == "SKIPPED")
        failing = [f"{s['name']}.{t['name']}" for s in r.get("testsuites", []) for t in s.get("testsuite", [])
                   if t.get("failures")]
        lines.append(f"| {name} | {code} | {r['tests']} | {r['failures']} | {skipped} "
                     f"| {r.get('time', '').rstrip('s')} | {', '.join(failing)} |")
    return lines


def train_step_table(paths):
    """Rows of bench/model_vs_torch.py --json files: whole training steps, fgvc beside PyTorch."""
    lines = ["| model | batch@size | amp | fgvc cuDNN algorithms | fgvc step ms | PyTorch step ms | fgvc / PyTorch | fgvc img/s | PyTorch img/s "
             "| fgvc peak MiB | PyTorch peak MiB |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for path in paths:
        with open(path) as f:
            j = json.load(f)
        for r in j["rows"]:
            fs, ts = r["fgvc_step_s"], r["torch_step_s"]
            algos = "measured" if r.get("fgvc_cudnn_benchmark") else "heuristic"
            lines.append(f"| {r['model']} | {r['batch']}@{r['input_size']} | {r['amp']} | {algos} | {fmt(fs * 1e3)} | {fmt(ts * 1e3)} "
                         f"| {fmt(fs / ts, 2)} | {fmt(r['batch'] / fs)} | {fmt(r['batch'] / ts)} "
                         f"| {fmt(r['fgvc_peak_mib'], 0)} | {fmt(r['torch_peak_mib'], 0)} |")
    return lines


def emd_table(paths):
    """Rows of bench_emd --json files: CPU and GPU solvers on the same problems, with the
    kernel's own time (CUDA events), its microseconds per pivot and the shares of its phases
    (pricing / warp 0's plan / the passes over the preorder / recomputing potentials), with
    where the tree lived (tier 2: tree and flows in shared memory, 1: the tree, 0: global)."""
    lines = ["| problem | distances s | CPU pivots | CPU s | GPU block | GPU pivots | GPU s | kernel s | us/pivot "
             "| phases % | CPU s / GPU s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]

    def phases(g):
        shares = g.get("phases") or []
        text = " / ".join(f"{100 * x:.0f}" for x in shares) if shares else "-"
        tier = g.get("shared_tier")  # 2: tree and flows in shared memory, 1: the tree, 0: global
        return text if tier is None else f"{text} (tier {tier})"

    def rows_split(g):  # by rows: the start, the passes' time with their round trips, the host's pivots
        if g.get("pass_seconds") is None or g.get("seconds") is None:
            return "-"
        start = g.get("start_seconds", 0.0)
        return (f"start {start:.3f} s, passes {g['pass_seconds']:.3f} s, "
                f"host pivots {g['seconds'] - g['pass_seconds'] - start:.3f} s")

    for path in paths:
        with open(path) as f:
            rows = json.load(f)
        for r in rows:
            cpu = r.get("cpu", {})
            if "batch" in r:
                gpu = r.get("gpu", {})
                cpu_total = cpu["seconds_per_problem"] * r["batch"] if cpu else None
                ratio = cpu_total / gpu["seconds"] if cpu and gpu else None
                lines.append(f"| batch of {r['batch']}: {r['m']} x {r['n']} each | {fmt(r['distance_s'], 3)} "
                             f"| {cpu.get('pivots_per_problem', '-')} | {fmt(cpu_total, 3)} | one launch "
                             f"| {gpu.get('pivots_per_problem', '-')} | {fmt(gpu.get('seconds'), 3)} "
                             f"| {fmt(gpu.get('kernel_seconds'), 3)} | - | - | {fmt(ratio, 2)} |")
                continue
            if "cpu_rows" in r:  # the CPU solver pricing by rows, on a line of its own
                c = r["cpu_rows"]
                lines.append(f"| {r['m']} x {r['n']}, CPU by rows ({c['passes']} passes) | {fmt(r['distance_s'], 3)} "
                             f"| {c['pivots']} | {fmt(c['seconds'], 3)} | - | - | - | - | - | - | - |")
            for g in r.get("gpu", [{}]):
                ratio = cpu["seconds"] / g["seconds"] if cpu and g else None
                rows = g.get("pricing") == "rows"  # passes on the GPU, pivots on the host: no kernel pivots
                per_pivot = (1e6 * g["kernel_seconds"] / g["pivots"]
                             if g.get("kernel_seconds") and g.get("pivots") and not rows else None)
                # candidates: what --row-candidates asked for (0: the solver's default, -1: every row's)
                wanted = {None: "", 0: "default candidates, ", -1: "every row's candidate, "}.get(
                    g.get("candidates"), f"{g.get('candidates')} candidates, ")
                block = f"rows ({wanted}{g.get('passes')} passes)" if rows else g.get("block", "-")
                lines.append(f"| {r['m']} x {r['n']} | {fmt(r['distance_s'], 3)} | {cpu.get('pivots', '-')} "
                             f"| {fmt(cpu.get('seconds'), 3)} | {block}"
                             f"{' (thread plan)' if g.get('plan') == 'thread' else ''} | {g.get('pivots', '-')} "
                             f"| {fmt(g.get('seconds'), 3)} | {fmt(g.get('kernel_seconds'), 3)} | {fmt(per_pivot, 2)} "
                             f"| {rows_split(g) if rows else phases(g)} | {fmt(ratio, 2)} |")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], required=True)
    p.add_argument("--gemm", help="bench_gemm JSON")
    p.add_argument("--elementwise", help="bench_elementwise JSON")
    p.add_argument("--torch", help="bench_torch.py JSON")
    p.add_argument("--emd", action="append", default=[], help="bench_emd --json output")
    p.add_argument("--train-step", action="append", default=[], help="bench/model_vs_torch.py --json output")
    p.add_argument("--tests", help='file of "<name> <exit code>" lines, with GoogleTest\'s <name>.json beside it')
    args = p.parse_args()
    torch = {}
    if args.torch:
        with open(args.torch) as f:
            torch = json.load(f)
    out = []
    if args.tests:
        out += ["### Tests", ""] + tests_table(args.tests) + [""]
    for title, path, table in (("GEMM, float32", args.gemm, gemm_table),
                               ("Elementwise and reductions, float32 (_bf16: bfloat16 data)", args.elementwise, elementwise_table)):
        if not path:
            continue
        entries, note = load_benchmarks(path, args.device)
        errors = sorted({e["error"] for e in entries.values() if "error" in e})
        out += [f"### {title} ({args.device})", ""] + ([note, ""] if note else [])
        if errors and not any("rate" in e for e in entries.values()):
            out += [f"Skipped: {'; '.join(errors)}", ""]  # every case failed (e.g. no CUDA device)
        else:
            out += table(args.device, entries, torch) + [""] + ([f"Errors: {'; '.join(errors)}", ""] if errors else [])
    if args.emd:
        out += ["### Exact EMD, CPU and GPU solvers (bench_emd)", ""] + emd_table(args.emd) + [""]
    if args.train_step:
        out += ["### Training step (RMSProp), fgvc vs PyTorch eager", ""] + train_step_table(args.train_step) + [""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
