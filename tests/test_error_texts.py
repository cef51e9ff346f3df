"""Error and warning texts name what the user typed and what the command accepts: no internal
placeholder ('no --schedule', 'eta None', a Python list), no choice list shorter than the
registry it stands for, no advice naming a flag the command that prints it rejects (issue 18)."""

import argparse
import ast
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import refused, run

from specsched.cli import build_parser
from specsched.cli.common import FM_SAMPLER_NAMES, fm_sampler_choices, fm_samplers
from specsched.schedules import BASELINES, SIGMA_BASELINES, Schedule, baseline_alphas_cumprod
from specsched.spectrum import memory as memory_module
from specsched.theory.samplers import sampler_names

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "specsched"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: A command spelled out in a message: ``specsched CMD ...`` between backquotes.
SPELLED = re.compile(r"`specsched ([a-z-]+)([^`]*)`")


def _flags_of_commands() -> dict[str, set[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {o for a in p._actions for o in a.option_strings}
            for name, p in sub.choices.items()}


FLAGS = _flags_of_commands()
#: The subcommand modules and the commands whose messages they print (shared modules: any).
MODULE_COMMANDS = {"optimize": ["optimize"], "evaluate": ["evaluate"], "spectrum": ["spectrum"],
                   "sweep": ["sweep"], "sample": ["sample"], "export": ["export"],
                   "analyze": ["analyze"], "fid": ["fid"],
                   "unet": ["train-unet", "sample-unet"]}


def _schedule_file(path, **fields):
    Schedule(baseline_alphas_cumprod("linear", 4), sampler="ddim").save(path)
    record = json.loads(Path(path).read_text())
    record.update(fields)
    Path(path).write_text(json.dumps(record))
    return path


# ---- internal values ---------------------------------------------------------------------

@pytest.mark.parametrize("extra, sampler", [([], "ddim"), (["--param", "fm"], "fm-euler"),
                                            (["--param", "ve"], "ddim-ve"),
                                            (["--sampler", "heun", "--param", "fm"], "fm-heun"),
                                            (["--sampler", "heun"], "heun")])
def test_evaluate_without_schedule_names_the_sampler_that_would_run(capsys, extra, sampler):
    code, _, err = run(["evaluate", "--spectrum", "cifar10", "--steps", "4", *extra], capsys)
    kind = "the sampler" if sampler == "heun" else "the discrete sampler"  # k-diffusion's
    assert refused(code, err, f"--schedule: required with {kind} {sampler!r}")


def test_sigma_range_without_schedule_names_no_placeholder(capsys):
    code, _, err = run(["evaluate", "--spectrum", "cifar10", "--sigma-range", "edm"], capsys)
    assert refused(code, err, "--sigma-range: applies to --schedule "
                   + ", ".join(SIGMA_BASELINES), "no --schedule was given")
    assert "'no --schedule'" not in err


def test_a_files_unknown_sampler_is_listed_plainly(tmp_path, capsys):
    path = _schedule_file(tmp_path / "s.json", sampler="nope")
    code, _, err = run(["evaluate", "--spectrum", "cifar10", "--schedule", path], capsys)
    assert refused(code, err, "s.json: sampler 'nope' (from the file): expected one of "
                   + ", ".join(sampler_names()) + "; pass --sampler")
    assert "None" not in err and "[" not in err


def test_a_files_eta_is_named_only_when_it_has_one(tmp_path, capsys):
    path = _schedule_file(tmp_path / "s.json", sampler="ddpm", eta=0.5)
    code, _, err = run(["evaluate", "--spectrum", "cifar10", "--schedule", path], capsys)
    assert refused(code, err, "s.json: sampler 'ddpm', eta 0.5 (from the file)")


# ---- choice lists built from the registries ----------------------------------------------

def test_param_fm_lists_every_flow_matching_sampler_and_alias(capsys):
    expected = fm_sampler_choices()
    for name in fm_samplers():
        assert name in expected
    for alias in FM_SAMPLER_NAMES:
        assert alias in expected
    code, _, err = run(["evaluate", "--spectrum", "cifar10", "--schedule", "cosine", "--steps",
                        "4", "--sampler", "ddpm", "--param", "fm"], capsys)
    assert refused(code, err, f"with --param fm use {expected}")
    code, _, err = run(["optimize", "--steps", "4", "--shift", "2"], capsys)
    assert refused(code, err, f"--shift: applies to flow matching (--param fm, "
                   f"{', '.join(fm_samplers())})")


def test_export_sigma_range_lists_the_sigma_baselines(tmp_path, capsys):
    code, _, err = run(["export", "--baseline", "fm-uniform", "--steps", "4", "--sigma-range",
                        "edm", "--to", "ab", "--out", tmp_path / "x.npy"], capsys)
    assert refused(code, err, "--sigma-range: applies to the baselines "
                   + ", ".join(SIGMA_BASELINES) + ", not to 'fm-uniform'")


def test_unknown_sampler_lists_every_name(capsys):
    from specsched.errors import InputError
    from specsched.theory.samplers import sampler_param

    with pytest.raises(InputError) as info:
        sampler_param("nope")
    assert str(info.value) == f"sampler: expected one of {', '.join(sampler_names())}, " \
                              "got 'nope'"


def test_schedule_names_every_baseline(capsys):
    code, _, err = run(["evaluate", "--spectrum", "cifar10", "--schedule", "nope"], capsys)
    assert refused(code, err, f"neither a baseline ({', '.join(BASELINES)})")


def _registries():
    from specsched.schedules import SPACINGS, TRAINING_FAMILIES
    from specsched.schedules.flow import FM_BASELINES
    from specsched.theory.sde import SDE_SOLVERS

    return {"samplers": [*sampler_names(), *SDE_SOLVERS], "baselines": list(BASELINES),
            "fm baselines": list(FM_BASELINES), "spacings": list(SPACINGS),
            "training families": list(TRAINING_FAMILIES)}


def _message_texts(path: Path):
    """``(line, text)`` of each raise / warn / parser error in ``path``, and in the command
    line's modules of each string assigned in a function (a message built before it is
    raised); an f-string's fields as ``{}``. Docstrings and ``add_argument`` help are left
    out."""
    assigned = path.parent.name == "cli"
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def render(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(render(v) if isinstance(v, ast.Constant) else "{}"
                           for v in node.values)
        return " ".join(render(n) for n in ast.iter_child_nodes(node)
                        if not isinstance(n, (ast.expr_context, ast.operator)))

    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            yield node.lineno, render(node.exc)
        elif isinstance(node, ast.Call) and getattr(
                node.func, "attr", getattr(node.func, "id", "")) in ("warn", "error", "say"):
            yield node.lineno, render(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and assigned:
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.Assign) and not isinstance(stmt.value,
                                                                   (ast.List, ast.Tuple)):
                    yield stmt.lineno, render(stmt.value)


def test_choice_lists_in_messages_are_not_written_by_hand():
    """Two or more names of one registry in a row, written in a message's constant text of
    the command line, would drift from the registry: such lists are joined from it."""
    registries = _registries()
    failures = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for line, text in _message_texts(path):
            for what, names in registries.items():
                alt = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
                run_ = re.compile(rf"(?<![\w-])(?:{alt})(?:,? (?:or |and )?|, )(?:{alt})(?![\w-])")
                for m in run_.finditer(text):
                    failures.append(f"{path.name}:{line}: {what}: {m.group(0)!r}")
    assert not failures, failures


# ---- advice names the flags of the command that prints it --------------------------------

def test_advised_flags_exist_in_the_command_that_prints_them():
    """Every ``--flag`` in an error or warning text exists: in the parser of the command whose
    module prints it (``specsched/cli/CMD.py``); in some command's parser for the shared and
    library modules; and a flag in a spelled-out ``specsched CMD ...`` in CMD's parser."""
    failures = []
    for path in sorted(PACKAGE.rglob("*.py")):
        commands = MODULE_COMMANDS.get(path.stem) if path.parent.name == "cli" else None
        for line, text in _message_texts(path):
            for cmd, rest in SPELLED.findall(text):
                for flag in FLAG.findall(rest):
                    if flag not in FLAGS.get(cmd, ()):
                        failures.append(f"{path.relative_to(ROOT)}:{line}: {flag} "
                                        f"(specsched {cmd})")
            own = SPELLED.sub("", text)
            own = re.sub(r"(?<![\w-])export --to\b", "", own)  # names export's option
            for flag in FLAG.findall(own):
                holders = [c for c, flags in FLAGS.items() if flag in flags]
                if commands is not None:
                    ok = any(c in holders for c in commands)
                else:
                    ok = bool(holders) or flag == "--help"
                if not ok:
                    failures.append(f"{path.relative_to(ROOT)}:{line}: {flag} "
                                    f"({', '.join(commands or ['any command'])})")
    assert not failures, failures


@pytest.mark.parametrize("command", ["optimize", "evaluate", "sample"])
def test_memory_refusal_points_to_the_spectrum_command(tmp_path, capsys, monkeypatch,
                                                       command):
    monkeypatch.setattr(memory_module, "available_memory", lambda: 2**30)
    src = tmp_path / "wide.npy"
    np.save(src, np.zeros((3, 20000), dtype=np.float32))
    argv = {"optimize": ["optimize", "--data", src, "--steps", "4", "--out", tmp_path / "o"],
            "evaluate": ["evaluate", "--spectrum", src, "--schedule", "cosine", "--steps",
                         "4"],
            "sample": ["sample", "--spectrum", src, "--schedule",
                       _schedule_file(tmp_path / "s.json"), "--n", "2", "--out",
                       tmp_path / "x.npy"]}[command]
    code, _, err = run(argv, capsys)
    assert refused(code, err, "the full estimate needs",
                   f"`specsched spectrum {src} --method pca --rank K --out S.npz`",
                   f"`specsched spectrum {src} --method fourier --out S.npz`",
                   "then pass --spectrum S.npz")
    assert "use --method" not in err and ": --method full" not in err


def test_memory_refusal_of_the_spectrum_command_keeps_its_own_flags(tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setattr(memory_module, "available_memory", lambda: 2**30)
    src = tmp_path / "wide.npy"
    np.save(src, np.zeros((3, 20000), dtype=np.float32))
    code, _, err = run(["spectrum", src, "--out", tmp_path / "s.npz"], capsys)
    assert refused(code, err, "--method full needs", "use --method pca --rank K (",
                   "or --method fourier (")
    assert "`specsched spectrum" not in err


@pytest.mark.parametrize("command, argv, advice", [
    ("evaluate", ["--schedule", "cosine", "--steps", "4"],
     "use smaller chunks (--chunk-size) or a smaller input"),
    ("sample-unet", ["--checkpoint", "c.pt", "--schedule", "cosine", "--steps", "4", "--n", "1",
                     "--out", "x.npy"],
     "use smaller batches (--batch-size) or a smaller input"),
    ("sample", ["--schedule", "s.json", "--spectrum", "cifar10", "--n", "1", "--out", "x.npy"],
     "use smaller chunks or smaller batches (--chunk-size, --batch-size) or a smaller input"),
    ("export", ["--baseline", "cosine", "--steps", "4", "--to", "ab", "--out", "x.npy"],
     "out of memory; use a smaller input"),
])
def test_out_of_memory_advises_only_the_commands_own_options(capsys, monkeypatch, command,
                                                             argv, advice):
    module = "unet" if command == "sample-unet" else command
    name = "run_sample" if command == "sample-unet" else "run"

    def out_of_memory(args):
        raise MemoryError()

    monkeypatch.setattr(f"specsched.cli.{module}.{name}", out_of_memory)
    code, _, err = run([command, *argv], capsys)
    assert code == 4 and advice in err, err


def test_eigenvalues_given_as_data_are_pointed_to_a_spectrum_option(tmp_path, capsys):
    np.save(tmp_path / "eig.npy", np.linspace(2.0, 0.1, 8))
    code, _, err = run(["spectrum", tmp_path / "eig.npy", "--out", tmp_path / "s.npz"], capsys)
    assert refused(code, err, "the file is a spectrum already",
                   f"(as `specsched optimize --spectrum {tmp_path / 'eig.npy'}`)")
    assert "(--data)" not in err


@pytest.mark.parametrize("command", ["analyze", "train-unet"])
def test_npz_advice_names_the_command_that_takes_a_spectrum(tmp_path, capsys, command):
    np.savez(tmp_path / "theirs.npz", a=np.ones((3, 4)), eigenvalues=np.ones(4))
    argv = {"analyze": ["analyze", tmp_path / "theirs.npz", "--out", tmp_path / "a"],
            "train-unet": ["train-unet", "--data", tmp_path / "theirs.npz", "--checkpoint",
                           tmp_path / "c.pt", "--steps", "1"]}[command]
    code, _, err = run(argv, capsys)
    assert refused(code, err, "(as `specsched optimize --spectrum eig.npy`)")
    assert "(--spectrum eig.npy)" not in err


needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch not installed (optional extra unet)")


@needs_torch
def test_sample_unet_names_the_commands_that_make_a_matching_noise(tmp_path, capsys):
    from specsched.unet.train import TrainConfig, train_unet

    images = np.random.default_rng(0).uniform(-1, 1, (32, 8, 8, 1)).astype(np.float32)
    tiny = dict(image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                attention_resolutions=(4,), groups=4, batch_size=16, warmup_steps=2,
                checkpoint_every=2)
    ck = tmp_path / "white.pt"
    train_unet(TrainConfig(**tiny, steps=1), ck, images=images, progress=False)
    esnr = tmp_path / "esnr.json"
    Schedule(baseline_alphas_cumprod("linear", 3), sampler="ddim",
             noise_spectrum="equal-snr").save(esnr)
    common = ["sample-unet", "--checkpoint", ck, "--n", "2", "--out", tmp_path / "x.npy"]
    code, _, err = run([*common, "--schedule", esnr], capsys)
    assert refused(code, err, "esnr.json: noise_spectrum:", "'equal-snr', not 'white'",
                   "`specsched optimize --noise-spectrum white`",
                   "`specsched train-unet --noise-spectrum equal-snr`")
    assert "--noise-spectrum:" not in err and "use it with --noise-spectrum" not in err
    code, _, err = run([*common, "--schedule", "linear", "--steps", "3", "--sampler", "euler"],
                       capsys)
    assert refused(code, err, "`specsched train-unet --preconditioning edm`")
