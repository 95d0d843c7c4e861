"""``python -m ctadeface.demo DIR``: build a small BIDS dataset and deface it end to end.

The dataset holds synthetic CTA heads from :mod:`ctadeface.training.phantom` and, when present,
the real heads of ``../shared/data/heads`` (linked, not copied). Then the participant and group
levels run on it with the default model, exactly as a user would call them.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib

from ctadeface.training.phantom import make_phantom

#: Real heads of the shared data folder and the participant label each gets in the demo.
SHARED_HEADS = {
    "vhp": "heads/vhp_female_head.nii.gz",
    "mricrogl": "heads/mricrogl_head_ct_approx_hu.nii.gz",
    "slicer": "heads/slicer_ctheadaxial_lowres.nii.gz",
}
ROOT_SIDECAR = {
    "Modality": "CT",
    "InstitutionName": "Demo Hospital",
    "ContrastBolusAgent": "iodine",
}


def default_shared_dir() -> Path | None:
    """``../shared/data`` next to a source checkout, if it exists."""
    candidate = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


def build_dataset(
    root: Path, *, n_phantoms: int = 2, shared_dir: Path | None = None, seed: int = 0
) -> list[str]:
    """Write a BIDS dataset at ``root``; return the CT files' paths relative to it."""
    root.mkdir(parents=True, exist_ok=True)
    _write_json(
        root / "dataset_description.json",
        {"Name": "ctadeface demo", "BIDSVersion": "1.10.0", "DatasetType": "raw"},
    )
    _write_json(root / "ct.json", ROOT_SIDECAR)
    written: list[str] = []
    for i in range(n_phantoms):
        rel = f"sub-phantom{i + 1:02d}/anat/sub-phantom{i + 1:02d}_acq-cta_ce-iodine_ct.nii.gz"
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        phantom = make_phantom(seed + i, shape=(112, 112, 96), spacing=(2.0, 2.0, 2.0))
        nib.save(phantom.to_nifti(), str(target))
        _write_json(
            target.with_name(target.name.replace(".nii.gz", ".json")),
            {"PatientName": f"Phantom^{i + 1}", "AcquisitionDateTime": "2024-01-01T08:00:00"},
        )
        written.append(rel)
    if shared_dir is not None:
        for label, name in SHARED_HEADS.items():
            source = shared_dir / name
            if not source.is_file():
                continue
            rel = f"sub-{label}/anat/sub-{label}_ct.nii.gz"
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.symlink(source.resolve(), target)
            written.append(rel)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Build the demo dataset under DIR/bids and run both analysis levels on it."""
    from ctadeface.cli import main as cli_main

    p = argparse.ArgumentParser(prog="python -m ctadeface.demo", description=__doc__)
    p.add_argument("folder", type=Path, help="where to build the demo (e.g. demo/)")
    p.add_argument("--shared", type=Path, default=default_shared_dir(), help="shared/data folder")
    p.add_argument("--phantoms", type=int, default=2, help="number of synthetic heads")
    p.add_argument("--model", default=None, help="model to use (default: the app's default)")
    args = p.parse_args(argv)

    bids = args.folder.resolve() / "bids"
    out = bids / "derivatives" / "ctadeface"
    files = build_dataset(bids, n_phantoms=args.phantoms, shared_dir=args.shared)
    print(f"demo dataset: {bids} ({len(files)} CT images)")
    extra = ["--model", args.model] if args.model else []
    code = cli_main([str(bids), str(out), "participant", "-v", *extra])
    if code not in (0, 1):
        return code
    group_code = cli_main([str(bids), str(out), "group"])
    print(f"defaced images and masks: {out}/sub-*/anat/")
    print(f"group table: {out / 'group_ct.tsv'}")
    print(f"group report: {out / 'group_report.html'}")
    if code == 1:  # the run finished; some scans failed or can still be recognised: say so
        print("note: some scans failed or are still identifiable: see the report")
    return group_code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
