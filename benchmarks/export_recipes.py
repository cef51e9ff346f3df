"""What diffusers and k-diffusion sample on exported schedules, against ``specsched evaluate``.

Runs every recipe of docs/export.md (the functions ``recipe_*`` of tests/test_recipes.py, the
same code the tests assert on) on the CIFAR-10 spectrum (d = 3072, zero mean) with the exact
Wiener denoiser, and writes results/export_recipes.csv (first lines: the command and the code
version): per recipe
the library, the scheduler as called, the specsched sampler that models it, the W2 the library
samples (exact from probes for deterministic samplers; debiased Monte Carlo with its standard
error for stochastic ones), the W2 ``specsched evaluate`` gives for the exported file, and the
W2 of the closed forms the library does NOT follow (the traps of docs/export.md).

Usage: python benchmarks/export_recipes.py [--n 4000] [--out results]
Needs torch and diffusers; k-diffusion rows need ``pip install --no-deps k-diffusion`` (see
docs/export.md) and are left out without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import pandas as pd

    from specsched.errors import InputError
    from specsched.fileio import atomic_write
    from specsched.provenance import command_line, header
    from specsched.schedules.kdiffusion import load_k_diffusion_sampling
    from specsched.spectrum import load_spectrum

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="Monte Carlo samples")
    ap.add_argument("--out", default="results")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("recipes", ROOT / "tests" / "test_recipes.py")
    r = importlib.util.module_from_spec(spec)
    sys.modules["recipes"] = r  # dataclasses look their module up there
    spec.loader.exec_module(r)
    c = load_spectrum("cifar10")
    try:
        k = load_k_diffusion_sampling()
    except InputError as exc:
        print(f"k-diffusion rows left out: {exc}", file=sys.stderr)
        k = None
    with tempfile.TemporaryDirectory() as tmp:
        data = r.Data("cifar10", c.eigenvalues, c.mean, Path(tmp))
        runs = [r.recipe_ddpm(data, "fixed_small", n=args.n),
                r.recipe_ddpm(data, "fixed_large", n=args.n),
                r.recipe_dpm_solver(data), r.recipe_ddim_overwrite(data, steps=25),
                *(r.recipe_euler(data, s) for s in ("linspace", "trailing", "leading")),
                r.recipe_ascending_sigmas(data)]
        if k is not None:
            runs += [r.recipe_k_euler(data, k), r.recipe_k_euler_ancestral(data, k, n=args.n)]
    rows = [{"recipe": x.recipe, "library": x.library, "scheduler": x.scheduler,
             "sampler": x.sampler, "library_w2": x.library_w2, "evaluate_w2": x.evaluate_w2,
             "exact": x.se_w2_squared is None,
             "se_w2": None if x.se_w2_squared is None
             else x.se_w2_squared / (2 * max(x.library_w2, 1e-300)),
             "z": x.z, "not_followed": "; ".join(f"{k_}={v:.6g}" for k_, v in x.others.items())}
            for x in runs]
    table = pd.DataFrame(rows)
    out = Path(args.out) / "export_recipes.csv"
    with atomic_write(out, force=True, mode="w") as fh:
        fh.write(header(command_line("python benchmarks/export_recipes.py")))
        table.to_csv(fh, index=False, float_format="%.6g")
    print(table.to_string(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
