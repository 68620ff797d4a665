#!/usr/bin/env python3
"""Reference-fixture generator for magicnaming_models::face (MTCNN detection, five-point
alignment, ArcFace IResNet recognition).

Run from the repository root with the venv of tools/reference/requirements-face.txt:

    python tools/reference/make_face_fixtures.py

Writes (overwriting), deterministic (seeded torch/numpy generators; no network):

  magicnaming-models/assets/mtcnn/{pnet,rnet,onet}.safetensors
        facenet-pytorch 2.6.0's data/*.pt state dicts (MIT), made contiguous, f32, same keys:
        the detector's built-in weights
  tests/fixtures/face/{pnet,rnet,onet}.pt      the original legacy-format files, copied
  tests/fixtures/face/astronaut.png            scikit-image's astronaut (BSD), 256 x 256
  tests/fixtures/face/group.png                three astronaut faces (scales 0.8, 0.5
                                               mirrored, 0.35) on a 320 x 200 grey canvas
  tests/fixtures/face/iresnet_tiny.pth         torch.save (ZIP) of a tiny IResNet: the
                                               iresnet18 layer structure [2, 2, 2, 2] with
                                               stem 4, widths [4, 8, 8, 16], 32 features,
                                               random weights and batch-norm statistics
  tests/fixtures/face/iresnet_tiny.onnx        the same model exported as arcface_torch's
                                               torch2onnx.py does (batch norms folded)
  tests/fixtures/face/align_*.png              cv2.warpAffine outputs (see below)
  tests/fixtures/face/reference.safetensors    f32 tensors:
      pnet.in [1,3,30,37] / pnet.reg / pnet.prob   P-Net on a seeded input in [-1, 1]
      rnet.in [3,3,24,24] / rnet.reg / rnet.prob   R-Net likewise
      onet.in [2,3,48,48] / onet.reg / onet.landmarks / onet.prob
      area.out [1,3,37,53]       F.interpolate(astronaut, (37, 53), mode="area")
      {astronaut,group}.boxes [N,4], .probs [N], .points [N,5,2]
                                 MTCNN(keep_all=True).detect(np.uint8 RGB, landmarks=True)
      align.landmarks [5,2]      the astronaut's detected landmarks
      align.m112 [2,3], align.m224 [2,3]   insightface estimate_norm (112, and the template x2)
      align.shifted_landmarks [5,2], align.m_shifted [2,3]   landmarks moved 70 px up-left
      iresnet.out [2,32]         the tiny IResNet's eval() output (before L2 normalisation) on
                                 (x / 255 - 0.5) / 0.5 of align_112.png and align_shifted.png
  align_112.png: norm_crop of the astronaut (112);
  align_shifted.png: 112 crop whose source reaches outside the image (zero border).
"""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.numpy import save_file as save_np
from safetensors.torch import save_file
from skimage import data as skdata
from skimage import transform as sktrans

import facenet_pytorch
from facenet_pytorch import MTCNN

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "face")
ASSETS = os.path.join(ROOT, "magicnaming-models", "assets", "mtcnn")

# insightface python-package/insightface/utils/face_align.py
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def estimate_norm(lmk, image_size=112):
    ratio = float(image_size) / 112.0
    dst = ARCFACE_DST * ratio
    tform = sktrans.SimilarityTransform()
    tform.estimate(lmk, dst)
    return tform.params[0:2, :]


def norm_crop(img, lmk, image_size=112):
    m = estimate_norm(lmk, image_size)
    return cv2.warpAffine(img, m, (image_size, image_size), borderValue=0.0), m


# insightface recognition/arcface_torch/backbones/iresnet.py, with the widths as parameters
# (the original fixes stem 64 and widths 64/128/256/512); layer order, names and eps as there.
def conv3x3(i, o, stride=1):
    return nn.Conv2d(i, o, kernel_size=3, stride=stride, padding=1, groups=1, bias=False, dilation=1)


def conv1x1(i, o, stride=1):
    return nn.Conv2d(i, o, kernel_size=1, stride=stride, bias=False)


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
        identity = x
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    fc_scale = 7 * 7

    def __init__(self, layers, stem=64, widths=(64, 128, 256, 512), num_features=512):
        super().__init__()
        self.inplanes = stem
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(widths[0], layers[0])
        self.layer2 = self._make_layer(widths[1], layers[1])
        self.layer3 = self._make_layer(widths[2], layers[2])
        self.layer4 = self._make_layer(widths[3], layers[3])
        self.bn2 = nn.BatchNorm2d(widths[3], eps=1e-05)
        self.dropout = nn.Dropout(p=0, inplace=True)
        self.fc = nn.Linear(widths[3] * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)

    def _make_layer(self, planes, blocks, stride=2):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes, eps=1e-05))
        layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        for _ in range(1, blocks):
            layers.append(IBasicBlock(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.bn2(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        return self.features(self.fc(x))


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(ASSETS, exist_ok=True)
    data_dir = os.path.join(os.path.dirname(facenet_pytorch.__file__), "data")
    ref = {}
    nets = {}
    for name in ["pnet", "rnet", "onet"]:
        src = os.path.join(data_dir, f"{name}.pt")
        shutil.copyfile(src, os.path.join(OUT, f"{name}.pt"))
        sd = torch.load(src, weights_only=True)
        save_file({k: v.contiguous().float() for k, v in sd.items()}, os.path.join(ASSETS, f"{name}.safetensors"))

    mtcnn = MTCNN(keep_all=True)
    mtcnn.eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = torch.rand(1, 3, 30, 37, generator=g) * 2 - 1
        reg, prob = mtcnn.pnet(x)
        ref.update({"pnet.in": x, "pnet.reg": reg, "pnet.prob": prob})
        x = torch.rand(3, 3, 24, 24, generator=g) * 2 - 1
        reg, prob = mtcnn.rnet(x)
        ref.update({"rnet.in": x, "rnet.reg": reg, "rnet.prob": prob})
        x = torch.rand(2, 3, 48, 48, generator=g) * 2 - 1
        reg, lm, prob = mtcnn.onet(x)
        ref.update({"onet.in": x, "onet.reg": reg, "onet.landmarks": lm, "onet.prob": prob})

    astro512 = skdata.astronaut()
    astro = np.asarray(Image.fromarray(astro512).resize((256, 256), Image.LANCZOS))
    Image.fromarray(astro).save(os.path.join(OUT, "astronaut.png"), optimize=True)
    t = torch.from_numpy(astro).permute(2, 0, 1).unsqueeze(0).float()
    ref["area.out"] = F.interpolate(t, size=(37, 53), mode="area")

    face = Image.fromarray(astro512[30:200, 150:300])
    canvas = Image.new("RGB", (320, 200), (128, 128, 128))
    canvas.paste(face.resize((120, 136), Image.LANCZOS), (10, 30))
    canvas.paste(face.resize((75, 85), Image.LANCZOS).transpose(Image.FLIP_LEFT_RIGHT), (150, 20))
    canvas.paste(face.resize((52, 60), Image.LANCZOS), (250, 110))
    canvas.save(os.path.join(OUT, "group.png"), optimize=True)

    for name in ["astronaut", "group"]:
        img = np.asarray(Image.open(os.path.join(OUT, f"{name}.png")).convert("RGB"))
        boxes, probs, points = mtcnn.detect(img, landmarks=True)
        print(name, len(boxes), boxes, probs)
        ref[f"{name}.boxes"] = torch.tensor(np.stack(boxes).astype(np.float32))
        ref[f"{name}.probs"] = torch.tensor(np.array(probs, dtype=np.float32))
        ref[f"{name}.points"] = torch.tensor(np.stack(points).astype(np.float32))

    lmk = ref["astronaut.points"][0].numpy()
    a112, m112 = norm_crop(astro, lmk, 112)
    _, m224 = norm_crop(astro, lmk, 224)
    shifted = lmk - 70.0
    ash, msh = norm_crop(astro, shifted, 112)
    Image.fromarray(a112).save(os.path.join(OUT, "align_112.png"))
    Image.fromarray(ash).save(os.path.join(OUT, "align_shifted.png"))
    ref["align.landmarks"] = torch.tensor(lmk)
    ref["align.m112"] = torch.tensor(m112, dtype=torch.float32)
    ref["align.m224"] = torch.tensor(m224, dtype=torch.float32)
    ref["align.shifted_landmarks"] = torch.tensor(shifted)
    ref["align.m_shifted"] = torch.tensor(msh, dtype=torch.float32)

    torch.manual_seed(0)
    model = IResNet([2, 2, 2, 2], stem=4, widths=(4, 8, 8, 16), num_features=32)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.num_batches_tracked.fill_(7)
            if isinstance(mod, nn.PReLU):
                mod.weight.uniform_(0.05, 0.4)
    model.eval()
    torch.save(model.state_dict(), os.path.join(OUT, "iresnet_tiny.pth"))
    # As arcface_torch's torch2onnx.py exports (the insightface model zoo's recognizers):
    # eval mode, opset 11, batch norms after convolutions folded by the exporter.
    onnx_path = os.path.join(OUT, "iresnet_tiny.onnx")
    torch.onnx.export(
        model, torch.zeros(1, 3, 112, 112), onnx_path, input_names=["data"],
        keep_initializers_as_inputs=False, verbose=False, opset_version=11,
    )
    exported = onnx.load(onnx_path)
    exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "None"
    onnx.save(exported, onnx_path)
    x = np.stack([a112, ash]).astype(np.float32)
    x = torch.from_numpy(x).permute(0, 3, 1, 2)
    x = (x / 255.0 - 0.5) / 0.5
    with torch.no_grad():
        ref["iresnet.out"] = model(x)

    save_np({k: v.detach().float().contiguous().numpy() for k, v in ref.items()}, os.path.join(OUT, "reference.safetensors"))


if __name__ == "__main__":
    main()
