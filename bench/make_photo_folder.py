#!/usr/bin/python3
"""Builds a folder of ~800x600 JPEG photos for the loader benchmark from a Debian package
that ships photographs (mate-backgrounds: /usr/share/backgrounds/mate/nature). Each output is
a random 4:3 crop of one of the photos, resized to 800x600 and saved at JPEG quality 90,
sorted into a few class folders (an ImageFolder). Nothing here is committed.

    apt-get install mate-backgrounds python3-pil
    /usr/bin/python3 bench/make_photo_folder.py /tmp/photos [--count 400]
"""
import argparse
import glob
import os
import random

from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--source", default="/usr/share/backgrounds/mate/nature")
    args = ap.parse_args()
    photos = sorted(glob.glob(os.path.join(args.source, "*.jpg")))
    if not photos:
        raise SystemExit(f"no photos in {args.source} (apt-get install mate-backgrounds)")
    rng = random.Random(0)
    opened = [Image.open(p).convert("RGB") for p in photos]
    for i in range(args.count):
        im = opened[i % len(opened)]
        w, h = im.size
        cw = int(min(w, h * 4 / 3) * rng.uniform(0.5, 1.0))
        ch = cw * 3 // 4
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = im.crop((x, y, x + cw, y + ch)).resize((800, 600), Image.BILINEAR)
        d = os.path.join(args.out, f"class_{i % 8}")
        os.makedirs(d, exist_ok=True)
        crop.save(os.path.join(d, f"photo_{i:04d}.jpg"), quality=90)
    print(f"{args.count} photos of 800x600 in {args.out} (from {len(photos)} source photos)")


if __name__ == "__main__":
    main()
