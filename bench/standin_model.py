"""A randomly initialised stand-in for the published CTA-DEFACE model, for speed measurements.

The published weights (250 MB, shared/docs/models.md) cannot be fetched here. Its architecture is
known from the authors' figure: a plain nnU-Net v2 3D U-Net, 6 stages, 32-64-128-256-320-320
features, patch 128x128x128, 2 classes. Its plans' target spacing is not published; this stand-in
assumes 0.6 x 0.45 x 0.45 mm (k, j, i; a typical head CTA), stated in its dataset.json. Timings
with it measure the architecture, not the published masks (its masks are noise).

    .venv/bin/python -m bench.standin_model OUT      # writes OUT/Dataset001_DEFACE/...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ctadeface.segment.network import build_architecture, configuration
from ctadeface.training.train import CONFIGURATION, TrainConfig, make_dataset_json, make_plans

#: The published architecture (authors' figure): 6 stages, patch 128.
FEATURES = (32, 64, 128, 256, 320, 320)
SPACING = [0.6, 0.45, 0.45]  # assumed (k, j, i), mm
#: CT intensity statistics of the stand-in (assumed; they only scale the input).
INTENSITY = {
    "max": 3071.0,
    "mean": 50.0,
    "median": 40.0,
    "min": -1024.0,
    "percentile_00_5": -1000.0,
    "percentile_99_5": 1500.0,
    "std": 300.0,
}


def plans() -> dict:
    """The stand-in's plans: this repository's plan writer with the published architecture,
    then the assumed anisotropic CTA spacing."""
    config = TrainConfig(
        out=Path("."), features=FEATURES, patch=128, dataset_id=1, dataset_name="DEFACE"
    )
    out = make_plans(config, INTENSITY, [300, 512, 512])
    out["configurations"][CONFIGURATION]["spacing"] = list(SPACING)
    out["original_median_spacing_after_transp"] = list(SPACING)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path)
    args = p.parse_args(argv)
    spec = plans()
    folder = args.out / spec["dataset_name"] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_all").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(spec, indent=2))
    (folder / "dataset.json").write_text(json.dumps(make_dataset_json(0), indent=2))
    torch.manual_seed(0)
    network = build_architecture(configuration(spec, CONFIGURATION), channels=1, heads=2)
    checkpoint = {
        "network_weights": network.state_dict(),
        "init_args": {"plans": spec, "configuration": CONFIGURATION, "fold": "all"},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "current_epoch": 0,
    }
    torch.save(checkpoint, folder / "fold_all" / "checkpoint_final.pth")
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
