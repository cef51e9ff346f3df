"""What the subcommands share: argparse converters, option groups and argument resolution.

The converters raise :class:`argparse.ArgumentTypeError`, so argparse prints
``specsched CMD: error: argument --NAME: <message>`` and exits 2. Each accepts exactly the
values that can work: finite numbers in their range, integers up to a stated limit (a
number too large to run, such as ``--maxiter 10**100``, is refused, not passed on to a
solver that overflows). Nothing outside :mod:`specsched.cli` imports this module: the
library takes plain values.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex

from specsched.errors import InputError

EXIT_INPUT = 2
EXIT_NOT_CONVERGED = 3
#: The machine failed the command: disk full, a file-size limit, an I/O error, out of memory.
EXIT_RESOURCES = 4

#: The flag of each library parameter that a command passes on as it is: a library error
#: about ``param`` (:class:`~specsched.errors.InputError`) is shown with the flag instead.
PARAM_FLAGS = {"ab_min": "--ab-min", "ab_max": "--ab-max", "delta": "--delta",
               "maxiter": "--maxiter", "num_steps": "--steps", "steps": "--steps",
               "eta": "--eta", "nfe": "--nfe", "s_noise": "--s-noise", "r": "--r",
               "solver_type": "--solver-type", "sampler": "--sampler",
               "noise_spectrum": "--noise-spectrum"}
#: Parameters whose library messages start with the value at fault (a noise spectrum's name,
#: a file) rather than with ``"<param>: "``: the flag is put before the message (a leading
#: ``"noise spectrum"`` dropped), so that it reads ``--noise-spectrum: power:3: ...``.
FLAG_FIRST = ("noise_spectrum",)
#: Largest ``--maxiter``: SciPy's solvers take a C int, and a million iterations of a start
#: (each at least one loss evaluation) is already hours.
MAX_ITERATIONS = 1_000_000


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (a file name may hold
    them), so that a message stays one line."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


def error_message(exc: Exception) -> str:
    """The one-line message of a refusal, naming the flag where the library names a parameter
    (:data:`PARAM_FLAGS`)."""
    text = str(exc)
    param = getattr(exc, "param", None)
    if param in PARAM_FLAGS and text.startswith(f"{param}:"):
        text = PARAM_FLAGS[param] + text[len(param):]
    elif param in FLAG_FIRST:
        words = param.replace("_", " ")
        if text.startswith(words):
            text = text[len(words):].lstrip(": ")
        text = f"{PARAM_FLAGS[param]}: {text}"
    return one_line(text)


def _integer(text: str, expected: str) -> int:
    try:
        return int(text)
    except ValueError:  # also more than 4300 digits
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _number(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _integer(text, "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (a seed)."""
    value = _integer(text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def iteration_limit(text: str) -> int:
    """An integer in [1, :data:`MAX_ITERATIONS`]."""
    expected = f"an integer in [1, {MAX_ITERATIONS}]"
    value = _integer(text, expected)
    if not 1 <= value <= MAX_ITERATIONS:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (a location such as a log-normal mean)."""
    return _number(text, "a finite number")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, "a finite number > 0")
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {value:g}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (a margin)."""
    value = _number(text, "a finite number >= 0")
    if value < 0.0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value:g}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1]."""
    value = _number(text, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value:g}")
    return value


def open_unit_interval(text: str) -> float:
    """A number strictly between 0 and 1 (a level of alphas_cumprod)."""
    value = _number(text, "a number in the open interval (0, 1)")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a number in the open interval (0, 1), got {value!r}")
    return value


_HOST = r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]+\])"
_DASK_ADDRESS = re.compile(rf"^(?:(?P<scheme>[a-z]+)://)?(?P<host>{_HOST}):(?P<port>[0-9]+)$")
DASK_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")


def dask_address(text: str) -> str:
    """A dask scheduler address ``[tcp|tls|ucx|ws|wss://]HOST:PORT`` (port 1-65535), or
    ``local`` for a local cluster; checked for its form before any connection is tried."""
    if text == "local":
        return text
    m = _DASK_ADDRESS.match(text)
    expected = (f"a scheduler address [{'|'.join(DASK_SCHEMES)}://]HOST:PORT, e.g. "
                "tcp://127.0.0.1:8786, or 'local'")
    if m is None:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    if m["scheme"] is not None and m["scheme"] not in DASK_SCHEMES:
        raise argparse.ArgumentTypeError(f"unknown protocol {m['scheme']!r}; expected {expected}")
    if not 1 <= int(m["port"]) <= 65535:
        raise argparse.ArgumentTypeError(f"port {int(m['port'])} in {text!r} is not in 1-65535")
    return text


def image_size(text: str) -> tuple[int, int]:
    """``HxW`` (or ``N`` for a square) in pixels, both >= 1."""
    try:
        h, _, w = text.lower().partition("x")
        size = (int(h), int(w or h))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW in pixels (e.g. 64x64), got {text!r}") \
            from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return size


def add_source_args(p):
    """Options shared by commands that read samples (image and audio options, chunking)."""
    p.add_argument("--chunk-size", type=positive_int, default=4096, metavar="N",
                   help="samples per chunk (memory ~ N x d); default 4096")
    p.add_argument("--grayscale", action="store_true", help="images: convert RGB to luminance")
    p.add_argument("--crop", type=positive_int, default=None, metavar="PX",
                   help="images: centred square crop of PX pixels, before --size")
    p.add_argument("--size", type=image_size, default=None, metavar="HxW",
                   help="images: resize to H x W pixels (anti-aliased)")
    p.add_argument("--sample-rate", type=positive_int, default=16000, metavar="HZ",
                   help="audio: resample to HZ (default 16000)")
    p.add_argument("--frame-length", type=positive_int, default=16384, metavar="N",
                   help="audio: samples per frame, one frame = one sample (default 16384)")


def add_bounds_args(p):
    """``--ab-min``, ``--ab-max``, ``--delta`` and ``--maxiter`` of the optimiser."""
    from specsched.optimize import AB_MAX, AB_MIN, DELTA

    p.add_argument("--ab-min", type=open_unit_interval, default=AB_MIN,
                   help=f"lower bound on alphas_cumprod, in (0, 1) (default {AB_MIN:.4g})")
    p.add_argument("--ab-max", type=open_unit_interval, default=AB_MAX,
                   help=f"upper bound on alphas_cumprod, in (--ab-min, 1) (default {AB_MAX:.6g})")
    p.add_argument("--delta", type=nonnegative_float, default=DELTA,
                   help=f"monotonicity margin ab_s - ab_(s+1) >= delta (default {DELTA:g})")
    p.add_argument("--maxiter", type=iteration_limit, default=1000,
                   help=f"iteration limit of each optimiser start, at most {MAX_ITERATIONS} "
                   "(default 1000)")


def _parse_sigma_range(text: str, bounds: bool):
    choices = "edm, bounds" if bounds else "edm"
    expected = f"{choices} or SIGMA_MIN,SIGMA_MAX with 0 < SIGMA_MIN < SIGMA_MAX"
    if text == "edm" or (bounds and text == "bounds"):
        return text
    if text == "bounds":
        raise argparse.ArgumentTypeError("bounds needs --ab-min/--ab-max, which this command "
                                         "does not take; give edm or SIGMA_MIN,SIGMA_MAX")
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    lo, hi = (_number(part, expected) for part in parts)
    if not 0.0 < lo < hi:
        problem = "not positive" if not lo > 0.0 else "inverted (SIGMA_MIN >= SIGMA_MAX)"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}: {problem}")
    return (lo, hi)


def sigma_range(text: str):
    """``--sigma-range``: ``edm``, ``bounds`` or ``SIGMA_MIN,SIGMA_MAX`` (0 < min < max)."""
    return _parse_sigma_range(text, bounds=True)


def sigma_range_without_bounds(text: str):
    """``--sigma-range`` of a command without ``--ab-min``/``--ab-max``: ``edm`` or
    ``SIGMA_MIN,SIGMA_MAX``."""
    return _parse_sigma_range(text, bounds=False)


def add_sigma_range_arg(p, bounds: bool):
    """``--sigma-range`` of the sigma baselines (karras, exponential, kl_optimal); ``bounds``
    (the range of ``--ab-min``/``--ab-max``) where the command has them."""
    extra = (", bounds: sigma_min = sigma(--ab-max), sigma_max = sigma(--ab-min)"
             if bounds else "")
    p.add_argument("--sigma-range", type=sigma_range if bounds else sigma_range_without_bounds,
                   default=None,
                   metavar="edm|bounds|MIN,MAX" if bounds else "edm|MIN,MAX",
                   help="noise levels (sigma = sqrt((1 - ab)/ab)) between which the karras, "
                   "exponential and kl_optimal baselines run: edm (the default, 0.002,80)"
                   f"{extra}, or two numbers SIGMA_MIN,SIGMA_MAX")


def resolve_sigma_range(args, baseline: str | None = None):
    """``(sigma_min, sigma_max)`` of ``--sigma-range``, or None for EDM's default.

    ``bounds`` takes :func:`specsched.schedules.sigma_range_from_bounds` of ``--ab-min`` and
    ``--ab-max``. With ``baseline`` (a command exporting or evaluating one schedule), a range
    given for a baseline that is not a sigma baseline is refused, naming the flag.
    """
    from specsched.schedules import SIGMA_BASELINES, sigma_range_from_bounds

    value = getattr(args, "sigma_range", None)
    if value is None:
        return None
    if baseline is not None and baseline not in SIGMA_BASELINES:
        raise InputError(f"--sigma-range: applies to the baselines {', '.join(SIGMA_BASELINES)}"
                         f", not to {baseline!r}")
    if value == "edm":
        return None
    if value == "bounds":
        return sigma_range_from_bounds(args.ab_min, args.ab_max)
    return value


def source_options(args) -> dict:
    """The :func:`specsched.data.sources.open_source` options given on the command line."""
    opts = {}
    if args.grayscale:
        opts["grayscale"] = True
    if args.crop is not None:
        opts["crop"] = args.crop
    if args.size is not None:
        opts["size"] = args.size
    if args.sample_rate != 16000:
        opts["sample_rate"] = args.sample_rate
    if args.frame_length != 16384:
        opts["frame_length"] = args.frame_length
    return opts


#: Training grid of the baselines every optimised schedule is compared with
#: (docs/theory.md section 1).
NUM_TRAIN_TIMESTEPS = 1000


def check_steps_fit_training_grid(steps) -> None:
    """Refuse step counts above T = 1000 before any work (baselines live on that grid)."""
    too_many = [S for S in steps if S > NUM_TRAIN_TIMESTEPS]
    if too_many:
        raise InputError(
            f"--steps: {max(too_many)} sampling steps do not fit on a training grid of "
            f"T = {NUM_TRAIN_TIMESTEPS} timesteps; expected integers in [1, {NUM_TRAIN_TIMESTEPS}]"
        )


def add_data_args(p):
    """``--data`` or ``--spectrum``: where the spectrum comes from; the help lists every
    built-in name the loaders take."""
    from specsched.data import BUILTIN_DATASETS, DEFAULT_DATASET
    from specsched.data.sources import SYSTEM_DATASETS

    samples = [n for n in (*BUILTIN_DATASETS, *SYSTEM_DATASETS) if n != "cifar10"]
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="SRC",
                     help="samples: .npy/.npz array (N, ...), image folder, IDX file, CIFAR-10 "
                     "batch folder, audio folder, or a built-in dataset "
                     f"({', '.join(samples)}); default: {DEFAULT_DATASET}")
    src.add_argument("--spectrum", metavar="SRC",
                     help="spectrum .npz, 1-D .npy of eigenvalues, samples (as --data), or a "
                     f"built-in name ({', '.join((*BUILTIN_DATASETS, *SYSTEM_DATASETS))})")


def spectrum_from_args(args):
    """The spectrum named by ``--data`` or ``--spectrum`` (default: the built-in dataset).

    Samples are read with ``--chunk-size`` and the image / audio options of
    :func:`add_source_args` where the command has them.
    """
    from specsched.data import DEFAULT_DATASET
    from specsched.spectrum import load_spectrum

    opts = {}
    if hasattr(args, "chunk_size"):
        opts = {"chunk_size": args.chunk_size, **source_options(args)}
    src = getattr(args, "data", None) or args.spectrum or DEFAULT_DATASET
    try:
        return load_spectrum(src, as_data=bool(getattr(args, "data", None)), **opts)
    except InputError as exc:
        text = _estimator_advice(str(exc), src)
        if text == str(exc):
            raise
        raise InputError(text) from None


def _estimator_advice(text: str, src: str) -> str:
    """A memory refusal (:func:`specsched.spectrum.memory.check_memory`) for a command without
    ``specsched spectrum``'s ``--method`` and ``--rank``: each way out that changes the
    estimator becomes the ``specsched spectrum`` run that takes it, whose file the command
    then reads as ``--spectrum``; the estimate refused is named without the flag
    (``the full estimate needs ...``). Other messages are returned as they are."""
    from specsched.spectrum.memory import ESTIMATOR_WAYS

    head, sep, ways = text.partition("; use ")
    found = False
    for options, why in ESTIMATOR_WAYS.values():
        way = f"{options} ({why})"
        if way in ways:
            found = True
            ways = ways.replace(way, f"`specsched spectrum {shlex.quote(str(src))} {options} "
                                     f"--out S.npz` ({why})")
    if not found:
        return text
    head = re.sub(r"--method (\w+)", r"the \1 estimate", head)
    return f"{head}{sep}{ways}, then pass --spectrum S.npz"


DISCRETE_HELP = ("ddim (DDIM-eta, eta = 0), ddpm (eta = 1, posterior variance beta-tilde), "
                 "ddpm-large (variance beta), ddim-ve, ddpm-ve (SMLD ancestral); flow "
                 "matching (--param fm, start N(0, 1) at t_S): fm-euler (Euler on the "
                 "velocity, diffusers' FlowMatchEulerDiscreteScheduler), fm-heun (Heun, "
                 "FlowMatchHeunDiscreteScheduler)")
K_HELP = ("k-diffusion's samplers on the schedule's sigmas (VE, start N(0, sigma_S^2)): "
          "euler, euler-ancestral, heun, dpm-2, dpm-2-ancestral, lms, dpmpp-2s-ancestral, "
          "dpmpp-sde, dpmpp-2m, dpmpp-2m-sde, dpmpp-3m-sde (as k-diffusion's sample_* "
          "functions with their defaults); unipc (diffusers' UniPCMultistepScheduler, its "
          "default configuration, start N(0, 1) in VP)")
SDE_HELP = ("continuous-time VP solvers (Pierret & Galerne 2025): pg-euler, pg-heun "
            "(probability-flow ODE), pg-em (Euler-Maruyama), pg-ei (exponential integrator), "
            "pg-ddpm")


def _refusing(retired):
    """An argparse ``type`` that passes a name through unless ``retired(name)`` has a message
    for it (a former name), which becomes the one-line refusal (exit 2)."""
    def sampler_name(text: str) -> str:
        message = retired(text)
        if message is not None:
            raise argparse.ArgumentTypeError(message)
        return text
    return sampler_name


def sampler_help(choices, default) -> str:
    """The help of ``--sampler``: each family in ``choices`` described once; ``default`` None
    adds that the schedule file's sampler is the default."""
    return (f"one of {', '.join(choices)}: {DISCRETE_HELP}"
            + (f"; {K_HELP}" if "dpmpp-2m" in choices else "")
            + (f"; {SDE_HELP}" if "pg-euler" in choices else "")
            + ("; diffusers-ddim: diffusers' DDIMScheduler as it behaves (its step "
               "lands on t - T//S, not on the next grid timestep)"
               if "diffusers-ddim" in choices else "")
            + ("; diffusers-ddpm-large: DDPMScheduler(variance_type='fixed_large') as it "
               "behaves (noise on the final step)" if "diffusers-ddpm-large" in choices
               else "")
            + ("" if default else "; default: the schedule file's sampler, else ddim"))


def add_eta_arg(p):
    """``--eta``: any finite number >= 0 here; the sampler decides what it takes
    (:func:`specsched.theory.resolve_eta`: [0, 1] for ddim, >= 0 for k-diffusion's ancestral
    and SDE samplers, none for the others), so every command refuses alike."""
    p.add_argument("--eta", type=nonnegative_float, default=None,
                   help="DDIM-eta stochasticity in [0, 1] (with --sampler ddim), or the eta "
                   "(>= 0) of a k-diffusion ancestral/SDE sampler (default 1)")


def add_sampler_args(p, choices, default="ddim", retired=None):
    """``--sampler``, ``--eta`` and ``--init``: the sampler and the start of the reverse process.

    ``retired``, if given, maps a name to a message (or None): a former sampler name is refused
    with that message instead of argparse's list of choices (:func:`_refusing`).
    """
    p.add_argument("--sampler", choices=choices, default=default, metavar="SAMPLER",
                   type=None if retired is None else _refusing(retired),
                   help=sampler_help(choices, default))
    add_eta_arg(p)
    p.add_argument("--init", choices=["normal", "marginal"], default="normal",
                   help="start of the reverse process: N(0, I) (N(0, sigma_S^2) for VE) or "
                   "the true marginal")


def add_ksampler_option_args(p):
    """``--s-noise``, ``--r``, ``--solver-type``: options of k-diffusion's samplers besides
    ``--eta`` (defaults: the function's own; refused for a sampler that has none)."""
    p.add_argument("--s-noise", type=nonnegative_float, default=None,
                   help="noise scale s_noise of k-diffusion's ancestral and SDE samplers "
                   "(default 1)")
    p.add_argument("--r", type=float, default=None,
                   help="dpmpp-sde's intermediate step ratio r in (0, 1) (default 1/2)")
    p.add_argument("--solver-type", choices=["midpoint", "heun"], default=None,
                   help="dpmpp-2m-sde's second-order rule (default midpoint)")


def ksampler_options(args) -> dict:
    """The options :func:`add_ksampler_option_args` parsed (None where not given)."""
    return {"s_noise": args.s_noise, "r": args.r, "solver_type": args.solver_type}


#: ``--param fm``: the flow-matching sampler a familiar name stands for.
FM_SAMPLER_NAMES = {"ddim": "fm-euler", "euler": "fm-euler", "heun": "fm-heun"}


def fm_samplers() -> list[str]:
    """The flow-matching samplers (``fm-euler``, ``fm-heun``), from the sampler registry."""
    from specsched.theory.samplers import sampler_names, sampler_param

    return [name for name in sampler_names() if sampler_param(name) == "fm"]


def fm_sampler_choices() -> str:
    """What ``--sampler`` takes with ``--param fm``: each flow-matching sampler and the names
    that stand for it (:data:`FM_SAMPLER_NAMES`), e.g. ``"fm-euler (or ddim, euler) or ..."``."""
    def choice(name):
        aliases = [alias for alias, target in FM_SAMPLER_NAMES.items() if target == name]
        return f"{name} (or {', '.join(aliases)})" if aliases else name
    return " or ".join(choice(name) for name in fm_samplers())


def resolve_sampler(sampler, param):
    """Combine --sampler and --param: ``ddim --param ve`` is ``ddim-ve``; with ``--param fm``,
    ``ddim`` and ``euler`` are ``fm-euler`` and ``heun`` is ``fm-heun`` (docs/theory.md
    section 10)."""
    from specsched.theory.samplers import sampler_param

    if param == "ve" and sampler in ("ddim", "ddpm"):
        sampler = f"{sampler}-ve"
    if param == "fm":
        sampler = FM_SAMPLER_NAMES.get(sampler, sampler)
    own = sampler_param(sampler)
    if param is not None and own != param:
        if param == "fm":
            raise InputError(f"--param: sampler {sampler!r} is {own.upper()}, not a "
                             f"flow-matching sampler; with --param fm use {fm_sampler_choices()}")
        raise InputError(f"--param: sampler {sampler!r} is {own.upper()}, not {param}")
    return sampler


def add_fm_args(p):
    """``--shift``, ``--resolution``, ``--tokens``: the flow-matching baselines'
    parameters (:func:`specsched.schedules.flow.fm_baseline_times`)."""
    p.add_argument("--shift", type=positive_float, default=None, metavar="S",
                   help="flow matching (--param fm): SD3's shift s > 0 of the sd3-shift "
                   "baseline, t' = s t / (1 + (s - 1) t) (default 3.0)")
    p.add_argument("--resolution", type=positive_int, default=None, metavar="PX",
                   help="flow matching: image side in pixels for the shifted-cosine baseline "
                   "(logSNR + 2 log(64/PX)) and Flux's token count (PX/16)^2 (default: the "
                   "data's image side when known, else 64)")
    p.add_argument("--tokens", type=positive_int, default=None, metavar="N",
                   help="flow matching: Flux's image tokens for the flux-shift baseline "
                   "(default (PX/16)^2)")


def fm_kwargs_from_args(args, spectrum=None) -> dict:
    """The flow-matching baselines' ``shift``, ``resolution`` and ``tokens``
    (:func:`add_fm_args`); the resolution defaults to the side of square image samples."""
    from specsched.schedules.flow import SD3_SHIFT

    resolution = args.resolution
    shape = getattr(spectrum, "sample_shape", None) if spectrum is not None else None
    if resolution is None and shape is not None and len(shape) >= 2 and shape[0] == shape[1]:
        resolution = int(shape[0])
    out = {"shift": SD3_SHIFT if args.shift is None else args.shift,
           "resolution": 64 if resolution is None else resolution}
    if args.tokens is not None:
        out["tokens"] = args.tokens
    return out


def refuse_fm_args(args, applies_to: str) -> None:
    """Refuse ``--shift``, ``--resolution``, ``--tokens`` where no flow-matching baseline is
    made: ``"--FLAG: applies to APPLIES_TO"``."""
    for flag in ("shift", "resolution", "tokens"):
        if getattr(args, flag, None) is not None:
            raise InputError(f"--{flag}: applies to {applies_to}")


def check_fm_args(args, sampler) -> None:
    """Refuse ``--shift``, ``--resolution``, ``--tokens`` with a sampler that is not
    flow matching: they only shape the flow-matching baselines."""
    from specsched.theory.samplers import sampler_param

    if sampler_param(sampler) != "fm":
        refuse_fm_args(args, f"flow matching (--param fm, {', '.join(fm_samplers())}), not to the "
                             f"sampler {sampler!r}")


def steps_from_nfe(sampler: str, nfe) -> list[int]:
    """``--nfe`` as step counts: S per budget
    (:func:`specsched.theory.samplers.steps_for_nfe`), refusing a budget no step count
    spends exactly."""
    from specsched.theory.samplers import steps_for_nfe

    return sorted({steps_for_nfe(sampler, n) for n in nfe})


def n_samples_text(n_samples):
    """``, n_samples = N`` for a log line; empty for a spectrum given as eigenvalues alone."""
    return "" if n_samples is None else f", n_samples = {n_samples}"


def eta_text(eta):
    """`` (eta = E)`` for a log line after the sampler's name; empty when the sampler has none."""
    return "" if eta is None else f" (eta = {eta:g})"


NOISE_SPECTRUM_HELP = (
    "forward noise spectrum, diagonal in the data's eigenbasis (the Fourier basis under the "
    "Fourier model; docs/theory.md section 9): white (the default, the usual process), "
    "equal-snr (variances proportional to the eigenvalues: every direction at the same SNR), "
    "power:GAMMA (proportional to eigenvalue**GAMMA, GAMMA in [0, 2]; 0 white, 1 EqualSNR), "
    "fans or fans:GAMMA (FANS-style band shape annealed from low to high frequency; ddim and "
    "ddpm only), or FILE.npy (d positive variances in the order of the spectrum's "
    "eigenvalues, largest first, used as given). Named shapes have mean variance 1")


def add_noise_spectrum_arg(p):
    """``--noise-spectrum SPEC``: the forward noise (:func:`noise_from_args` reads it once the
    spectrum, and so its dimension, is known)."""
    p.add_argument("--noise-spectrum", dest="noise_spectrum", default="white", metavar="SPEC",
                   help=NOISE_SPECTRUM_HELP)


def noise_from_args(args, eigenvalues):
    """The :class:`~specsched.theory.noise.NoiseSpectrum` of ``--noise-spectrum`` for a data
    spectrum (eigenvalues, ndarray of shape (d,), largest first).

    Raises
    ------
    InputError
        As :func:`specsched.theory.noise.noise_spectrum` (``param="noise_spectrum"``: shown as
        ``--noise-spectrum: ...``): an unknown name, GAMMA outside [0, 2], a file that is
        missing or of the wrong length, a variance that is not finite and > 0.
    """
    from specsched.theory.noise import noise_spectrum

    return noise_spectrum(args.noise_spectrum, eigenvalues)


def check_noise_samplers(noise, samplers, flag: str = "--sampler") -> None:
    """Refuse, before any work, a sampler without a closed form under ``noise``: a noise
    spectrum that changes with the level (FANS) runs ddim and ddpm only
    (:func:`specsched.theory.varying.check_varying_sampler`), shown as ``FLAG: ...`` with
    the flag the command takes (``--sampler``, or ``--samplers`` for sweep)."""
    if noise.time_varying:
        from specsched.theory.varying import check_varying_sampler

        for sampler in samplers:
            try:
                check_varying_sampler(sampler, noise)
            except InputError as exc:
                text = str(exc)
                raise InputError(flag + text[len("sampler"):] if text.startswith("sampler:")
                                 else text) from None
