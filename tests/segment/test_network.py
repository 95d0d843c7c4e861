"""Tests of ctadeface.segment.network: the same network, tiles and weights as nnU-Net's,
without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctadeface.segment.network import (
    Network,
    UnsupportedModel,
    gaussian,
    load_checkpoint,
    load_network,
    plan_tiles,
    separate_axis,
    tile_starts,
    tiles_per_pass,
)
from tests import ROOT, TINY_MODEL

TINY = TINY_MODEL
OPEN = ROOT / "ctadeface" / "data" / "models" / "open"


def _folder(root: Path) -> Path:
    return next(root.rglob("plans.json")).parent


@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(*[st.integers(16, 200)] * 3),
    patch=st.tuples(*[st.integers(8, 16)] * 3),
    step=st.sampled_from([0.5, 0.75, 1.0]),
)
def test_tile_starts_are_nnunets(size, patch, step) -> None:
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    assert tile_starts(size, patch, step) == compute_steps_for_sliding_window(size, patch, step)


def test_plan_tiles_keeps_the_tiles_holding_the_region_and_counts_the_whole_grids() -> None:
    shape, patch = (40, 56, 24), [16, 16, 16]
    whole = [(0, n) for n in shape]
    every = plan_tiles(shape, patch, whole, 0.5)
    assert len(every.tiles) == every.whole == 4 * 6 * 2  # nnU-Net's tiles at step 0.5
    region = np.zeros(shape, bool)
    region[2:6, 40:50, 3] = True
    some = plan_tiles(shape, patch, whole, 0.5, region)
    assert some.whole == every.whole and 0 < len(some.tiles) < every.whole
    lo = [a for a, _ in some.real]
    block = region[tuple(slice(a, b) for a, b in some.real)]
    assert all(block[tile].any() for tile in some.tiles)  # a kept tile holds the region
    assert block.sum() == region.sum() and lo == [0, 32, 0]


@pytest.mark.parametrize("patch", [(64, 64, 64), (32, 48, 40), (1, 8, 9)])
def test_gaussian_is_nnunets(patch) -> None:
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    ours = gaussian(patch, torch.device("cpu"))
    theirs = compute_gaussian(patch, 1.0 / 8, 10, device=torch.device("cpu"))
    assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


@settings(max_examples=80, deadline=None)
@given(
    current=st.tuples(*[st.sampled_from([0.4, 0.5, 1.0, 1.5, 2.5, 3.0, 5.0])] * 3),
    new=st.tuples(*[st.sampled_from([0.4, 1.0, 2.5, 3.0, 6.0])] * 3),
    force=st.sampled_from([None, True, False]),
)
def test_separate_axis_is_nnunets(current, new, force) -> None:
    from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis

    separate, axis = determine_do_sep_z_and_axis(force, np.array(current), np.array(new))
    assert separate_axis(force, current, new) == (int(axis) if separate else None)


@pytest.mark.parametrize("root", [TINY, OPEN], ids=["tiny", "open"])
def test_network_and_weights_are_nnunets(root: Path) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    folder = _folder(root)
    trainer = folder.name.split("__")[0]
    config, module, weights = load_network(
        folder, "3d_fullres", ["all"], "checkpoint_final.pth", trainer
    )
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), ("all",), "checkpoint_final.pth")
    assert list(config.patch_size) == list(predictor.configuration_manager.patch_size)
    assert list(config.spacing) == list(predictor.configuration_manager.spacing)
    assert config.heads == predictor.label_manager.num_segmentation_heads
    assert config.has_regions == predictor.label_manager.has_regions
    x = torch.randn(1, 1, *config.patch_size, generator=torch.Generator().manual_seed(0))
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    with torch.inference_mode():
        assert torch.equal(module(x), predictor.network.eval()(x))
    assert weights[0].keys() == predictor.list_of_parameters[0].keys()


def test_checkpoints_load_without_running_pickled_code(tmp_path: Path) -> None:
    folder = _folder(TINY)
    content = load_checkpoint(folder / "fold_all" / "checkpoint_final.pth")
    assert "network_weights" in content
    bad = tmp_path / "bad.pth"
    torch.save({"network_weights": {}, "payload": Path("/etc/passwd")}, bad)
    with pytest.raises(Exception, match=r"weights_only|Unsupported global|WeightsUnpickler"):
        load_checkpoint(bad)


def test_custom_trainers_are_left_to_nnunet(tmp_path: Path) -> None:
    folder = _folder(TINY)
    with pytest.raises(UnsupportedModel, match="nnUNetTrainerDA5"):
        load_network(folder, "3d_fullres", ["all"], "checkpoint_final.pth", "nnUNetTrainerDA5")


def test_the_fast_path_does_not_import_nnunet(tmp_path: Path) -> None:
    """nnU-Net's import alone costs ~0.3 GiB of memory (torch._dynamo, SimpleITK, sklearn...)."""
    code = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from ctadeface.segment.models import resolve_model\n"
        "from ctadeface.segment.segmenter import FaceSegmenter\n"
        "seg = FaceSegmenter(resolve_model('open', Path(sys.argv[1])), device='cpu')\n"
        "seg.predict(np.full((40, 40, 30), -1000, np.int16), (5.0, 5.0, 5.0),\n"
        "            affine=np.diag([5.0, 5.0, 5.0, 1.0]))\n"
        "print(sorted(m for m in sys.modules if m.startswith('nnunetv2')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    ).stdout
    assert out.strip() == "[]"


def _fp16_spacing(magnitude: torch.Tensor) -> torch.Tensor:
    """The gap between adjacent float16 numbers at ``magnitude`` (>= 0): 2^(e - 10) in the
    binade [2^e, 2^(e+1)), 2^-24 among the subnormals below 2^-14."""
    return torch.exp2(torch.floor(torch.log2(magnitude.clamp_min(2.0**-14))) - 10)


def test_tiles_in_one_pass_sum_to_the_same_logits_as_one_by_one() -> None:
    """Batching only changes which float32 kernels compute each tile's prediction; the sums
    stay nnU-Net's fp16 ones, in nnU-Net's tile order. The bound follows from that arithmetic:

    - a voxel's running sum S_k = fp16(S_(k-1) + p_k * w) is rounded once per tile that covers
      it (K tiles), so two runs whose predictions differ by d_k drift apart by at most
      sum_k (d_k * w + one fp16 spacing at the sums' magnitude), the magnitude being at most
      A = sum_k |p_k| * w (grown by the roundings: a factor 1 + 2^-10);
    - the weights W are summed identically in both runs, and the quotient S / W is rounded to
      fp16 once more: one spacing at the logit's magnitude.

    The predictions' own float32 difference d is measured, not assumed, and must itself lie far
    below fp16's resolution (one spacing at the largest prediction), or batching would be wrong.
    """
    folder = _folder(TINY)
    config, module, weights = load_network(
        folder, "3d_fullres", ["all"], "checkpoint_final.pth", folder.name.split("__")[0]
    )
    cpu = torch.device("cpu")
    assert tiles_per_pass(module, config, cpu) == 1
    patch = [int(p) for p in config.patch_size]
    shape = [p + p // 2 for p in patch]
    starts = tile_starts(shape, patch, 0.5)
    tiles = [
        (slice(a, a + patch[0]), slice(b, b + patch[1]), slice(c, c + patch[2]))
        for a in starts[0]
        for b in starts[1]
        for c in starts[2]
    ]
    assert len(tiles) > 3
    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(1))
    one_by_one = Network(module, weights, config, cpu, batch=1)
    one = one_by_one.logits(x, tiles)
    three = Network(module, weights, config, cpu, batch=3).logits(x, tiles)

    # the float32 predictions each run sums: tile by tile, and in passes of three
    parts = [x[(0, slice(None), *tile)] for tile in tiles]
    with torch.inference_mode():
        single = [one_by_one._predict_tile(part[None])[0] for part in parts]
        batched = [
            pred
            for first in range(0, len(parts), 3)
            for pred in one_by_one._predict_tile(torch.stack(parts[first : first + 3]))
        ]
    w = gaussian(patch, cpu)
    covering = torch.zeros(shape)
    magnitude = torch.zeros((config.heads, *shape))
    drift = torch.zeros((config.heads, *shape))
    weight = torch.zeros(shape, dtype=torch.half)
    for tile, a, b in zip(tiles, single, batched, strict=True):
        covering[tile] += 1
        magnitude[(slice(None), *tile)] += torch.maximum(a.abs(), b.abs()) * w.float()
        drift[(slice(None), *tile)] += (a - b).abs() * w.float()
        weight[tile] += w
    largest = max(float(a.abs().max()) for a in single)
    worst = max(float((a - b).abs().max()) for a, b in zip(single, batched, strict=True))
    assert worst <= float(_fp16_spacing(torch.tensor(largest)))

    sums = drift + covering * _fp16_spacing(magnitude * (1 + 2.0**-10))
    bound = sums / weight.float() + _fp16_spacing(torch.maximum(one.abs(), three.abs()))
    assert bool(((three - one).abs() <= bound).all()), float(((three - one).abs() - bound).max())
