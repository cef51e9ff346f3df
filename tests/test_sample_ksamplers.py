"""``specsched.sampling.ksamplers``: k-diffusion's samplers batch by batch (issue 13)."""

import numpy as np
import pytest

from specsched.sampling.ksamplers import WienerModel, sample_k
from specsched.schedules import baseline_alphas_cumprod
from specsched.theory.kclosed import kdiffusion_sigmas

AB = baseline_alphas_cumprod("karras", 6)


# ---- the batch generator and the Brownian path it keeps short --------------------------------

def test_batches_are_sample_k_runs_and_arguments_are_checked_first():
    from specsched.errors import InputError
    from specsched.sampling.ksamplers import sample_k_batches

    lam = np.array([0.1, 1.0, 4.0])
    model, sigmas = WienerModel(lam, np.array([0.5, 0.0, -1.0])), kdiffusion_sigmas(AB)
    got = list(sample_k_batches(model, sigmas, "dpmpp-3m-sde", 7, 3, batch_size=3,
                                rng=np.random.default_rng(5), options={"s_noise": 0.9},
                                progress=False))
    rng = np.random.default_rng(5)
    want = [sample_k(model, sigmas, "dpmpp-3m-sde", b, 3, rng=rng,
                     options={"eta": 1.0, "s_noise": 0.9}) for b in (3, 3, 1)]
    assert [s for s, _ in got] == [0, 3, 6]
    for (_, a), b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    for kwargs, needle in [({"n": 0}, "n: expected an integer >= 1"),
                           ({"batch_size": True}, "batch_size: expected an integer >= 1"),
                           ({"noise": "pink"}, "noise: expected one of"),
                           ({"options": {"r": 0.3}}, "r: sampler 'euler' (sample_euler) has no r"),
                           ({"sampler": "ddim"}, "sampler: expected one of")]:
        args = {"n": 4, "batch_size": 2, "noise": "default", "options": None,
                "sampler": "euler", **kwargs}
        with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            sample_k_batches(model, sigmas, args["sampler"], args["n"], 3, rng=rng,
                             batch_size=args["batch_size"], noise=args["noise"],
                             options=args["options"])  # raised on the call, not on next()


def test_forgetting_the_path_above_the_lowest_level_changes_no_draw():
    # levels reached in decreasing order, as the samplers reach them: forgetting all but the
    # lowest keeps every increment (the same draws of the same stream); a level above the
    # forgotten part is refused rather than drawn from the wrong law
    from specsched.sampling.ksamplers import BrownianNoise

    pairs = [(8.0, 3.0), (8.0, 1.0), (1.0, 0.4), (1.0, 0.1), (0.1, 0.02)]  # dpmpp-sde's shape
    full, short = (BrownianNoise((4, 2), np.random.default_rng(9)) for _ in range(2))
    for a, b in pairs:
        np.testing.assert_array_equal(full(a, b), short(a, b))
        if b in (1.0, 0.1, 0.02):  # the end of a step
            short.forget_all_but_lowest()
    assert len(full.times) == 6 and short.times == [0.02]
    with pytest.raises(RuntimeError, match="above 0.02"):
        short(0.5, 0.01)
