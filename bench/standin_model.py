"""A randomly initialised stand-in for the published CTA-DEFACE model, for speed measurements.

The published weights (250 MB, shared/docs/models.md) cannot be fetched here. Its architecture is
known from the authors' figure: a plain nnU-Net v2 3D U-Net, 6 stages, 32-64-128-256-320-320
features, patch 128x128x128, 2 classes. Its plans' target spacing is not published; this stand-in
assumes 0.6 x 0.45 x 0.45 mm (k, j, i; a typical head CTA), stated in its dataset.json. Timings
with it measure the architecture, not the published masks (its masks are noise).

    .venv/bin/python bench/standin_model.py OUT      # writes OUT/Dataset001_DEFACE/...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 6,
        "features_per_stage": [32, 64, 128, 256, 320, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 6,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
        "n_conv_per_stage": [2] * 6,
        "n_conv_per_stage_decoder": [2] * 5,
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}
SPACING = [0.6, 0.45, 0.45]  # assumed (k, j, i), mm


def plans() -> dict:
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [128, 128, 128],
        "median_image_size_in_voxels": [300, 512, 512],
        "spacing": SPACING,
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {
            "is_seg": False,
            "order": 3,
            "order_z": 0,
            "force_separate_z": None,
        },
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {
            "is_seg": False,
            "order": 1,
            "order_z": 0,
            "force_separate_z": None,
        },
        "architecture": ARCH,
        "batch_dice": False,
    }
    return {
        "dataset_name": "Dataset001_DEFACE",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": SPACING,
        "original_median_shape_after_transp": [300, 512, 512],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 3071.0,
                "mean": 50.0,
                "median": 40.0,
                "min": -1024.0,
                "percentile_00_5": -1000.0,
                "percentile_99_5": 1500.0,
                "std": 300.0,
            }
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path)
    args = p.parse_args(argv)
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    folder = args.out / "Dataset001_DEFACE" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_all").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans(), indent=2))
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "face": 1},
        "numTraining": 0,
        "file_ending": ".nii.gz",
        "description": "random stand-in for CTA-DEFACE's architecture; spacing assumed",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    kwargs = dict(ARCH["arch_kwargs"])
    kwargs.update(
        conv_op=torch.nn.Conv3d,
        norm_op=torch.nn.InstanceNorm3d,
        nonlin=torch.nn.LeakyReLU,
        dropout_op=None,
        deep_supervision=False,
    )
    torch.manual_seed(0)
    network = PlainConvUNet(input_channels=1, num_classes=2, **kwargs)
    checkpoint = {
        "network_weights": network.state_dict(),
        "init_args": {"plans": plans(), "configuration": "3d_fullres", "fold": "all"},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "current_epoch": 0,
    }
    torch.save(checkpoint, folder / "fold_all" / "checkpoint_final.pth")
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
