#!/usr/bin/env bash
# The core install runs every core command: the README's main command plus one invocation of
# each core subcommand, from an empty folder, with whatever `specsched` is first on PATH (CI
# runs it in a fresh virtual environment holding `pip install .` alone, no extras).
# Each optional extra must fail only where it is used, naming the extra to install.
# Not a test suite: the numbers are checked by `python -m pytest`; this checks that the
# commands run at all, and that one reference value (docs/theory.md section 5) comes out.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
py=$(dirname "$(command -v specsched)")/python
step() { printf '\n== %s\n' "$*"; }

step "README main command: specsched optimize (built-in natural-patches)"
specsched optimize
test -s specsched-out/schedule_ddim_w2_S10.json -a -s specsched-out/summary.csv \
  -a -s specsched-out/schedules.png

step "input data: a .npy of samples and a folder of PNG images"
"$py" - <<'EOF'
import os
import numpy as np
import skimage.io
rng = np.random.default_rng(0)
np.save("samples.npy", rng.standard_normal((400, 6, 6)))
os.makedirs("imgs")
for i in range(16):
    img = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    skimage.io.imsave(f"imgs/{i:02d}.png", img, check_contrast=False)
EOF
specsched optimize --data samples.npy --steps 5 --out opt-npy
specsched optimize --data imgs --steps 5 --sampler ddpm --out opt-imgs

step "evaluate: the CIFAR-10 reference value W2 = 5.5886 (DDIM, linear, S = 10)"
specsched evaluate --spectrum cifar10 --schedule linear --spacing linspace --steps 10 \
  --sampler ddim --json | tee eval.json
"$py" -c "import json; w2 = json.load(open('eval.json'))['w2']; assert abs(w2 - 5.5886) < 5e-5, w2"
specsched evaluate --spectrum cifar10 --schedule specsched-out/schedule_ddim_w2_S10.json

step "flow matching: optimise from pure noise, the best SD3 shift, export for diffusers"
specsched optimize --spectrum cifar10 --param fm --steps 5 --sampler heun --out opt-fm
specsched export opt-fm/schedule_fm-heun_w2_S5.json --to diffusers-flow --out fm-export
test -s fm-export/diffusers_flow_schedule.json

step "spectrum: full, pca, fourier"
specsched spectrum samples.npy --out full.npz
specsched spectrum natural-patches --method pca --rank 16 --out pca.npz
specsched spectrum imgs --method fourier --out fourier.npz
specsched optimize --spectrum full.npz --steps 4 --out opt-spectrum

step "analyze, sweep, sample, export"
specsched analyze digits --steps 5 --out analysis
test -s analysis/summary.json
specsched sweep --spectrum cifar10 --steps 5 10 --samplers ddim --losses w2 --jobs 1 --out sweep
test -s sweep/sweep.csv
specsched sample --schedule opt-npy/schedule_ddim_w2_S5.json --spectrum samples.npy --n 64 \
  --seed 1 --out samples-gen.npy --report
for to in diffusers k-diffusion sigmas ab betas; do
  specsched export specsched-out/schedule_ddim_w2_S10.json --to "$to" --out "export-$to"
done

step "coloured forward noise (--noise-spectrum) on the commands that take it"
specsched optimize --spectrum cifar10 --steps 5 --noise-spectrum equal-snr --out opt-eq
specsched evaluate --spectrum cifar10 --schedule opt-eq/schedule_ddim_w2_S5.json \
  --noise-spectrum equal-snr --json | tee eval-eq.json
"$py" -c "import json; d = json.load(open('eval-eq.json')); assert d['noise_spectrum'] == 'equal-snr' and d['w2'] < 1e-6, d"
"$py" -c "import numpy as np; np.save('c.npy', np.linspace(0.5, 2.0, 36))"
specsched optimize --data samples.npy --steps 5 --noise-spectrum fans --out opt-fans
specsched sample --schedule opt-fans/schedule_ddim_w2_S5.json --spectrum samples.npy --n 64 \
  --noise-spectrum fans --out samples-fans.npy --report
specsched evaluate --spectrum samples.npy --schedule cosine --steps 5 --noise-spectrum c.npy --json
specsched analyze digits --steps 5 --noise-spectrum fans --out analysis-fans
specsched sweep --spectrum cifar10 --steps 5 --samplers ddim --losses w2 --jobs 1 \
  --noise-spectrum power:0.5 --out sweep-power

step "optional extras fail only where used, naming the extra"
expect_extra() {  # expect_extra EXTRA COMMAND...: exit 2 and a message naming the extra
  local extra=$1; shift
  set +e; "$@" >out.txt 2>err.txt; local rc=$?; set -e
  if [ "$rc" -ne 2 ] || ! grep -q "specsched\[$extra\]" err.txt || grep -q Traceback err.txt; then
    echo "FAIL: '$*' (extra $extra): exit $rc"; cat err.txt; exit 1
  fi
  echo "ok ($extra): $(head -c 160 err.txt)"
}
# Run each only where its extra is absent (a developer's full environment has them all).
if ! "$py" -c "import distributed" 2>/dev/null; then
  expect_extra distributed specsched spectrum samples.npy --dask --out dask.npz
fi
if ! "$py" -c "import cupy" 2>/dev/null; then
  expect_extra gpu specsched spectrum samples.npy --device cuda --out cuda.npz
fi
if ! "$py" -c "import torch" 2>/dev/null; then
  expect_extra unet specsched train-unet --checkpoint unet.pt --minutes 0.01
fi
if ! "$py" -c "import soundfile" 2>/dev/null && [ -d /usr/share/sonic-pi/samples ]; then
  expect_extra audio specsched spectrum sonic-pi-samples --method fourier --out audio.npz
fi
printf '\ncore smoke: every core command ran\n'
