#!/usr/bin/env bash
# The speed benchmark on a lent GPU machine, in one call (< 9 minutes).
#
# 1. Here, once (needs pip's registry; writes the ignored folder .gpu/, < 64 MiB):
#        bench/gpu.sh prepare
#    - py3.12 manylinux wheels of what the GPU image lacks (the image has torch, numpy, scipy,
#      scikit-image, pandas, matplotlib...; see /work/.library/device/KINDS.md).
# 2. On the machine (device tool: carry [".gpu"], timeout_s 560; ~9 minutes):
#        bash bench/gpu.sh run            # SMOKE=1 first runs a one-minute smoke test
#    installs the wheels into /tmp/site, makes the CTA-DEFACE stand-in (bench.standin_model:
#    the published architecture, random weights), runs bench.benchmark with --device cuda
#    for the open model and the stand-in on the CTA-sized phantom (2 runs, with the
#    reference), then on the 512x512x800 arch-to-vertex phantom (1 run, ours and the I/O
#    floor only), and writes *-results.md/json and the log under $OUT.
#
# Targets: <= 3 s per 512x512x300 CTA after model load, for both models; <= 6 s for the
# 800-slice CTA.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
cd "$HERE"
GPU="$HERE/.gpu"

prepare() {
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
    rm -rf "$GPU" && mkdir -p "$GPU/wheels"
    local py="${PYTHON:-$HERE/.venv/bin/python}"
    local platforms=(--python-version 3.12 --implementation cp)
    for n in 28 27 17 5; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
    platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
    # The closure of nnunetv2, pybids, nibabel and isal (versions as in .venv) minus what the
    # GPU image already has; pure-Python sdists are built into wheels here. Left out to fit the
    # 64 MiB carry: imagecodecs (optional for tifffile) and SimpleITK (51 MB): there the
    # reference reads NIfTI with nnU-Net's NibabelIO (same arrays), SimpleITK being a stub.
    local need=(acres==0.5.0 acvl-utils==0.2.6 batchgenerators==0.25.5
        batchgeneratorsv2==0.3.6 bids-validator==1.14.7.post0 bidsschematools==2.0.1
        blosc2==4.14.1 connected-components-3d==4.1.1 docopt==0.6.2
        dynamic-network-architectures==0.4.4 frozendict==2.5.1 future==1.0.0 graphviz==0.21
        isal==1.9.1 linecache2==1.0.0 ndindex==1.10.1 nibabel==5.4.2
        nnunetv2==2.8.1 num2words==0.5.14 numexpr==2.14.2 pathlib-abc==0.5.2 pybids==0.22.0
        sqlalchemy==2.1.9 traceback2==1.4.0 unittest2==1.1.0
        universal-pathlib==0.3.10 yacs==0.1.8 pydantic==2.14.4 pydantic-core==2.50.5
        annotated-types==0.8.0 typing-inspection==0.4.5)
    for spec in "${need[@]}"; do
        "$py" -m pip download -q --no-deps --only-binary=:all: "${platforms[@]}" \
            -d "$GPU/wheels" "$spec" 2>/dev/null ||
            "$py" -m pip wheel -q --no-deps -w "$GPU/wheels" "$spec" >/dev/null
    done
    local used
    used=$(du -sm "$GPU" | cut -f1)
    echo "$GPU: ${used} MiB (the carry limit is 64 MiB with the rest of the tree)"
    [ "$used" -lt 60 ] || { echo "too large to carry" >&2; exit 1; }
}

run() {
    : "${OUT:?run this on the device machine (OUT unset)}"
    # Rehearse here on the CPU with: OUT=/tmp/o PY=.venv/bin/python DEVICE=cpu SMOKE=only
    local py="${PY:-python3}" device="${DEVICE:-cuda}" t0=$SECONDS
    mkdir -p /tmp/stub && : >/tmp/stub/SimpleITK.py # imported, unused with NibabelIO
    export PYTHONPATH="/tmp/site:$HERE:/tmp/stub" PYTHONUNBUFFERED=1
    if ! "$py" -c "import nnunetv2, bids, isal" 2>/dev/null; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "$GPU"/wheels/*.whl
    fi
    "$py" -m bench.standin_model /tmp/standin >/dev/null
    echo "set-up: $((SECONDS - t0)) s" | tee -a "$OUT/log.txt"
    if [ "$device" = cuda ]; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    fi
    bench() { # name timeout args...: one benchmark.py run, its log appended to $OUT/log.txt,
        # its results copied to $OUT at once (a call cut short keeps the runs already done)
        local name=$1 limit=$2 status=0
        shift 2
        echo "== $name ($((SECONDS - t0)) s)" | tee -a "$OUT/log.txt"
        timeout "$limit" "$py" -m bench.benchmark --device "$device" --reference-reader NibabelIO \
            --work /tmp/bench --out "/tmp/results-$name" "$@" >>"$OUT/log.txt" 2>&1 || status=$?
        for f in results.md results.json; do
            [ ! -f "/tmp/results-$name/$f" ] || cp "/tmp/results-$name/$f" "$OUT/$name-$f"
        done
        return "$status"
    }
    local standin=/tmp/standin/Dataset001_DEFACE
    if [ -n "${SMOKE:-}" ]; then # tiny phantom, one run: a broken set-up fails in a minute
        bench smoke-open 90 --model open --runs 1 --batch 1 --shared /none \
            --phantom-shape 128,128,80 || {
            tail -n 40 "$OUT/log.txt"
            echo "smoke run of the open model failed: stopping" >&2
            exit 1
        }
        [ "$SMOKE" != only ] || return 0
    fi
    # The 512x512x300 CTA phantom, 2 runs each, for ours and for the published architecture
    # (on that machine (b) takes ~50 s a run, nnU-Net preprocessing on the CPU), then the
    # 800-slice phantom without the reference (made once, about a minute, by its first run;
    # the inputs are shared through /tmp/bench); the most wanted first, as time may run out
    local name
    for name in open standin; do
        local model=open
        [ "$name" = standin ] && model=$standin
        bench "$name" "${LIMIT:-240}" --runs 2 --batch 2 --model "$model" --shared /none \
            --only cta-phantom ||
            echo "benchmark of $name failed or ran out of time" | tee -a "$OUT/log.txt"
    done
    for name in open standin; do
        local model=open
        [ "$name" = standin ] && model=$standin
        bench "a2v-$name" "${LIMIT_A2V:-150}" --runs 1 --batch 0 --no-reference \
            --model "$model" --shared /none --only cta-arch-to-vertex ||
            echo "arch-to-vertex benchmark of $name failed or ran out of time" | tee -a "$OUT/log.txt"
    done
    echo "done in $((SECONDS - t0)) s" | tee -a "$OUT/log.txt"
    tail -n 30 "$OUT/log.txt"
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
*)
    echo "usage: bench/gpu.sh prepare|run" >&2
    exit 64
    ;;
esac
