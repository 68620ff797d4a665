#!/usr/bin/env python3
"""Times facenet-pytorch's MTCNN and a PyTorch ArcFace IResNet-50 on the shapes
`magicnaming bench --components faces` times, with the same row names, warm-up, timed
runs and JSON layout (tools/bench/compare.py pairs the rows):

- face:detect          MTCNN(min_face_size=20, factor=0.709, thresholds=[0.6, 0.7, 0.7],
                       keep_all=True).detect(PIL image, landmarks=True)
- face:detect:pyramid  the image pyramid alone, as facenet-pytorch's detect_face builds it
                       (uint8 -> float, F.interpolate(mode="area") per scale, normalised)
- face:detect:pnet     P-Net alone on those pyramid levels
- face:iresnet50       insightface arcface_torch iresnet50 (layers [3, 4, 14, 3], 512-d),
                       random weights, eval(), at --face-batch x 3 x 112 x 112

Everything runs in float32 under torch.inference_mode() on the CPU, with --threads torch
threads (default: all the CPUs, as burn-ndarray's thread pool). The photo is used at its
size; --make-image writes the upscaled photo both sides then read. Run from the repository
root with facenet-pytorch 2.6.0 installed (pip install --no-deps facenet-pytorch==2.6.0)
next to torch and torchvision.

    python tools/bench/bench_faces.py --make-image tests/fixtures/face/astronaut.png --side 1024 --image OUT.png
    python tools/bench/bench_faces.py --image OUT.png [--face-batch 32] [--warmup 2] [--iters 10] [--json OUT.json]
"""
import argparse
import os
import resource
import shlex
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_diffusers import Bench, device_name, script_name, write_json  # noqa: E402


# insightface recognition/arcface_torch/backbones/iresnet.py (iresnet50's layout: stem 64,
# widths 64/128/256/512); layer order, names and eps as there, dropout omitted (p = 0).
def conv3x3(i, o, stride=1):
    return nn.Conv2d(i, o, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, layers=(3, 4, 14, 3), widths=(64, 128, 256, 512), num_features=512):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            self._make_layer(w, n) for w, n in zip(widths, layers))
        self.bn2 = nn.BatchNorm2d(widths[3], eps=1e-05)
        self.fc = nn.Linear(widths[3] * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)

    def _make_layer(self, planes, blocks, stride=2):
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes, eps=1e-05))
        layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image", required=True, help="the photo (read, or written by --make-image)")
    p.add_argument("--make-image", metavar="SRC",
                   help="write SRC resized to --side x --side (PIL LANCZOS) to --image, then exit")
    p.add_argument("--side", type=int, default=1024)
    p.add_argument("--face-batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--budget-s", type=float,
                   help="stop a component's timed runs after this many seconds (after at least one)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    a = p.parse_args(argv)
    if a.face_batch < 1 or a.iters < 1 or a.warmup < 0 or a.side < 12:
        p.error("--face-batch and --iters must be >= 1, --warmup >= 0, --side >= 12")
    a.device, a.dtype = "cpu", "fp32"
    return a


def make_image(src, side, dst):
    from PIL import Image
    img = Image.open(src).convert("RGB")
    img.resize((side, side), Image.LANCZOS).save(dst)
    print(f"wrote {dst}: {src} resized to {side}x{side} (PIL LANCZOS)", file=sys.stderr)


def run(a, b):
    from PIL import Image
    from facenet_pytorch import MTCNN
    from facenet_pytorch.models.utils.detect_face import imresample

    img = Image.open(a.image).convert("RGB")
    w, h = img.size
    t0 = time.perf_counter()
    mtcnn = MTCNN(min_face_size=20, factor=0.709, thresholds=[0.6, 0.7, 0.7], keep_all=True,
                  select_largest=True, device="cpu").eval()
    build_s = time.perf_counter() - t0
    found = []

    def detect():
        boxes, probs, points = mtcnn.detect(img, landmarks=True)
        found.append(0 if boxes is None else len(boxes))
        return boxes
    settings = f"min face {mtcnn.min_face_size}, factor {mtcnn.factor}, thresholds {mtcnn.thresholds}"
    b.record("face:detect", f"MTCNN detect, {w}x{h} photo, {settings}", build_s, detect)
    b.rows[-1]["what"] += f"; {found[-1]} faces"
    b.on_row()

    # facenet-pytorch detect_face's pyramid, from the PIL image.
    m = 12.0 / mtcnn.min_face_size
    minl, scale, scales = min(h, w) * m, m, []
    while minl >= 12:
        scales.append(scale)
        scale *= mtcnn.factor
        minl *= mtcnn.factor

    def pyramid():
        imgs = torch.as_tensor(np.stack([np.uint8(img)]).copy()).permute(0, 3, 1, 2).float()
        return [(imresample(imgs, (int(h * s + 1), int(w * s + 1))) - 127.5) * 0.0078125 for s in scales]
    b.record("face:detect:pyramid",
             f"MTCNN image pyramid alone: {len(scales)} area resizes of the {w}x{h} photo, normalised",
             0.0, pyramid)
    levels = pyramid()
    _, _, lh, lw = levels[0].shape
    b.record("face:detect:pnet",
             f"MTCNN P-Net alone on the {len(levels)} pyramid levels (largest {lh}x{lw})",
             0.0, lambda: [mtcnn.pnet(x) for x in levels])
    del levels

    model, build_s = b.on_device(IResNet)
    g = torch.Generator().manual_seed(a.seed)
    x = torch.rand(a.face_batch, 3, 112, 112, generator=g) * 2 - 1
    b.record("face:iresnet50",
             f"IResNet-50 (arcface_torch r50, random weights, 512-d), batch {a.face_batch} at 112x112",
             build_s, lambda: model(x))


def make_report(a, b, started, load_start, implementation):
    return {
        "schema": "magicnaming-bench/1",
        "tool": "pytorch",
        "implementation": implementation,
        "device": "cpu",
        "device_name": device_name(b.device),
        "dtype": a.dtype,
        "date": started,
        "command": " ".join(shlex.quote(x) for x in [script_name()] + sys.argv[1:]),
        "settings": {
            "face_image": a.image, "face_batch": a.face_batch, "warmup": a.warmup, "iters": a.iters,
            "image_iters": a.iters, "image_warmup": min(a.warmup, 1), "seed": a.seed,
            "budget_s": a.budget_s, "torch_threads": torch.get_num_threads(),
        },
        "components": b.rows,
        "host_load": {"start": load_start, "end": list(os.getloadavg())},
        "memory": {
            "host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "device_peak_bytes": None,
            "note": "host_peak_rss_bytes: ru_maxrss",
        },
    }


def main(argv=None):
    a = parse_args(argv)
    if a.make_image:
        make_image(a.make_image, a.side, a.image)
        return
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    b = Bench(a)
    load_start = list(os.getloadavg())
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    from importlib.metadata import version
    impl = (f"facenet-pytorch {version('facenet-pytorch')}, torch {torch.__version__}, "
            f"torchvision {version('torchvision')}")
    if a.json:  # the report after each row: a run stopped by a time limit keeps its rows
        b.on_row = lambda: write_json(a.json, make_report(a, b, started, load_start, impl))
    with torch.inference_mode():
        run(a, b)
    report = make_report(a, b, started, load_start, impl)
    print(f"pytorch faces bench on cpu ({report['device_name']}), fp32, {torch.get_num_threads()} threads")
    print(f"{'component':<22} {'median ms':>12} {'min ms':>12} {'max ms':>12} {'first ms':>12} {'build s':>9}  what")
    for r in b.rows:
        first = "-" if r["first_ms"] is None else f"{r['first_ms']:.1f}"
        print(f"{r['name']:<22} {r['median_ms']:>12.1f} {r['min_ms']:>12.1f} {r['max_ms']:>12.1f} {first:>12} "
              f"{r['build_s']:>9.1f}  {r['what']}")
    print(f"peak host memory (ru_maxrss): {report['memory']['host_peak_rss_bytes'] / 2**30:.2f} GiB")
    if a.json:
        write_json(a.json, report)


if __name__ == "__main__":
    main()
