#!/usr/bin/python3
"""The input pipeline side by side: fgvc-loader-bench against torchvision + PIL, same folder,
same output size, same transform family (Inception-style random crop of area [0.1, 1] and
aspect [0.75, 1.33], bilinear resize, flip, brightness/saturation jitter, normalisation),
one process each with one worker thread, batches of 32. Prints images/s and the ratio.

    /usr/bin/python3 bench/make_photo_folder.py /tmp/photos
    /usr/bin/python3 bench/loader_vs_torchvision.py /tmp/photos [--sizes 299,560] [--images 600]
"""
import argparse
import json
import os
import subprocess
import time

import torch
import torchvision.datasets as datasets
import torchvision.transforms as T


def torchvision_rate(folder, size, images, mode):
    if mode == "train":
        tf = T.Compose([T.RandomResizedCrop(size, scale=(0.1, 1.0), ratio=(0.75, 1.33)), T.RandomHorizontalFlip(),
                        T.ColorJitter(brightness=0.125, saturation=0.5), T.ToTensor(),
                        T.Normalize([0.5] * 3, [0.5] * 3)])
    else:
        tf = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(folder, tf), batch_size=32, shuffle=True, num_workers=0)
    done, t0 = 0, time.perf_counter()
    while done < images:
        for x, _ in loader:
            done += x.shape[0]
            if done >= images:
                break
    return done / (time.perf_counter() - t0)


def fgvc_rate(binary, folder, size, images, mode, workers):
    out = subprocess.run([binary, "--device", "cpu", "--data", folder, "--input-size", str(size), "--images",
                          str(images), "--mode", mode, "--workers", str(workers), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_sec"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--bin", default="build/bin/fgvc-loader-bench")
    ap.add_argument("--sizes", default="299,560")
    ap.add_argument("--images", type=int, default=600)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{'mode':>6} {'size':>5} | {'fgvc 1 thr':>10} {'fgvc all':>9} | {'torchvision':>11} | {'ratio':>6}")
    for mode in ("train", "eval"):
        for size in map(int, args.sizes.split(",")):
            ours = fgvc_rate(args.bin, args.folder, size, args.images, mode, 1)
            ours_all = fgvc_rate(args.bin, args.folder, size, args.images, mode, os.cpu_count())
            theirs = torchvision_rate(args.folder, size, args.images, mode)
            print(f"{mode:>6} {size:>5} | {ours:10.1f} {ours_all:9.1f} | {theirs:11.1f} | {ours / theirs:6.2f}")
    print("images/s; ratio = fgvc with one worker / torchvision + PIL in one process")


if __name__ == "__main__":
    main()
