#!/usr/bin/python3
"""Writes the fuzz targets' seed inputs into tests/fuzz/corpus/<target>/seed-* (a developer
tool: Debian python3-pil and python3-numpy). Inputs that a fuzzing run adds (scripts/fuzz.sh)
sit beside them under their libFuzzer hash names."""
import io
import json
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import safetensors_io  # noqa: E402


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


def images():
    rng = np.random.default_rng(2018)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 17, 3), dtype=np.uint8), "RGB")
    gray = rgb.convert("L")

    def save(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()
    write("fuzz_image", "rgb.jpg", save(rgb, "JPEG", quality=50))
    write("fuzz_image", "rgb-420.jpg", save(rgb.resize((40, 33)), "JPEG", quality=30, subsampling=2))
    write("fuzz_image", "gray.jpg", save(gray, "JPEG", quality=50))
    write("fuzz_image", "progressive.jpg", save(rgb, "JPEG", quality=40, progressive=True))
    write("fuzz_image", "cmyk.jpg", save(rgb.convert("CMYK"), "JPEG", quality=40))
    write("fuzz_image", "truncated.jpg", save(rgb, "JPEG", quality=50)[:200])
    write("fuzz_image", "rgb.png", save(rgb, "PNG"))
    write("fuzz_image", "rgba.png", save(rgb.convert("RGBA"), "PNG"))
    write("fuzz_image", "palette.png", save(rgb.convert("P"), "PNG"))
    write("fuzz_image", "gray16.png", save(Image.fromarray(rng.integers(0, 65536, (5, 7), dtype=np.uint16)), "PNG"))
    write("fuzz_image", "rgb.bmp", save(rgb, "BMP"))
    write("fuzz_image", "rgb.gif", save(rgb.convert("P"), "GIF"))
    write("fuzz_image", "gray.pgm", save(gray, "PPM"))
    write("fuzz_image", "rgb.ppm", save(rgb, "PPM"))
    write("fuzz_image", "one-pixel.png", save(Image.new("RGB", (1, 1), (200, 10, 30)), "PNG"))
    write("fuzz_image", "tall.jpg", save(Image.new("RGB", (1, 64), (20, 100, 30)), "JPEG"))
    write("fuzz_image", "empty", b"")


def safetensors():
    def blob(tensors, metadata=None):
        path = os.path.join(HERE, "corpus", ".tmp.safetensors")
        safetensors_io.save(path, tensors, metadata)
        with open(path, "rb") as f:
            data = f.read()
        os.remove(path)
        return data
    rng = np.random.default_rng(7)
    features = rng.normal(size=(3, 4)).astype(np.float32)
    write("fuzz_safetensors", "domain", blob({"features": features, "counts": np.array([5, 1, 2], np.int64)},
                                             {"classes": json.dumps(["a", "b", "c"]), "model": "resnet50"}))
    write("fuzz_safetensors", "domain-f64", blob({"features": features.astype(np.float64),
                                                 "counts": np.array([1, 0, 2], np.int64)}))
    write("fuzz_safetensors", "weights", blob({"fc.weight": rng.normal(size=(2, 3)).astype(np.float32),
                                              "fc.bias": np.zeros(2, np.float32),
                                              "bn.num_batches_tracked": np.array(3, np.int64)}))
    write("fuzz_safetensors", "checkpoint", blob({"fc.weight": features, "ema.fc.weight": features,
                                                 "optim.fc.weight.ms": features},
                                                {"format": "fgvc-checkpoint", "step": "3"}))
    write("fuzz_safetensors", "empty-header", blob({}))
    write("fuzz_safetensors", "bytes", blob({"x": np.arange(5, dtype=np.uint8)}))


def datasets():
    coco = {"images": [{"id": 1, "file_name": "a/1.jpg"}, {"id": 2, "file_name": "b/2.jpg"}],
            "annotations": [{"image_id": 1, "category_id": 7}, {"image_id": 2, "category_id": 3}],
            "categories": [{"id": 3, "name": "Aves"}, {"id": 7, "name": "Plantae"}]}
    write("fuzz_dataset", "coco.json", json.dumps(coco).encode())
    write("fuzz_dataset", "coco-no-annotations.json", json.dumps({"images": coco["images"],
                                                                   "categories": coco["categories"]}).encode())
    write("fuzz_dataset", "list.txt", b"a/1.jpg\t0\nb/2.jpg 1\n# comment\n\nc d/3.jpg  2\n")
    write("fuzz_dataset", "list-bad-label.txt", b"a/1.jpg\tx\n")


if __name__ == "__main__":
    images()
    safetensors()
    datasets()
