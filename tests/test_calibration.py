"""A denoiser's measured per-direction linear filter (specsched.sampling.calibration).

The fit must recover what is known: the Wiener filter's gains ``lambda / (lambda + sigma^2)``
with no bias and no residual, on Gaussian and on non-Gaussian data with the same
eigenvectors (the filter is linear); and a planted linear denoiser's gain, bias and added
noise variance, within their Monte Carlo standard errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from specsched.errors import InputError
from specsched.sampling.calibration import calibrate_denoiser
from specsched.sampling.ksamplers import WienerModel

RNG = np.random.default_rng(3)
D = 6
U, _ = np.linalg.qr(RNG.normal(size=(D, D)))  # an eigenbasis of the pixel space
LAM = np.array([4.0, 2.0, 1.0, 0.5, 0.1, 0.02])
MU = RNG.normal(size=D)
SIGMAS = np.array([0.05, 0.3, 1.0, 4.0])


class PixelWiener:
    """The Wiener denoiser of N(MU, U diag(LAM) U^T) in pixel space."""

    def __call__(self, x, sigma):
        coords = (x - MU) @ U
        return MU + (coords * (LAM / (LAM + sigma**2))) @ U.T


def data(n, law="gaussian", rng=RNG):
    z = rng.standard_normal((n, D)) if law == "gaussian" else \
        rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), (n, D))  # unit variance, not Gaussian
    return MU + (z * np.sqrt(LAM)) @ U.T


@pytest.mark.parametrize("law", ["gaussian", "uniform"])
def test_the_wiener_filter_is_recovered_exactly(law):
    cal = calibrate_denoiser(PixelWiener(), data(500, law), SIGMAS, eigenvectors=U, mean=MU,
                             rng=np.random.default_rng(0), batch_size=128)
    expected = LAM / (LAM + SIGMAS[:, None] ** 2)
    np.testing.assert_allclose(cal.gain, expected, rtol=1e-9)
    np.testing.assert_allclose(cal.bias, 0.0, atol=1e-9)
    assert np.all(cal.residual_variance <= 1e-12 * LAM.max())


def test_a_planted_linear_denoiser_with_bias_and_noise_is_recovered():
    a = np.array([0.9, 0.7, 0.5, 0.3, 0.2, 0.1])
    b = np.array([0.1, -0.2, 0.0, 0.05, 0.3, -0.1])
    noise_sd = np.array([0.0, 0.1, 0.2, 0.05, 0.3, 0.15])
    noise_rng = np.random.default_rng(11)

    def model(x, sigma):  # in eigenbasis coordinates (no eigenvectors)
        return a * x + b + noise_sd * noise_rng.standard_normal(x.shape)

    n = 40_000
    x0 = RNG.standard_normal((n, D)) * np.sqrt(LAM)
    cal = calibrate_denoiser(model, x0, [0.5], rng=np.random.default_rng(1))
    var_u = LAM + 0.25
    se_a = noise_sd / np.sqrt(n * var_u) + 1e-12
    assert np.all(np.abs(cal.gain[0] - a) < 5 * se_a)
    assert np.all(np.abs(cal.bias[0] - b) < 5 * noise_sd / np.sqrt(n) + 1e-12)
    se_r = noise_sd**2 * np.sqrt(2.0 / n) + 1e-12
    assert np.all(np.abs(cal.residual_variance[0] - noise_sd**2) < 5 * se_r)
    # the test has power: the Wiener gains of this data are not the planted ones
    assert np.max(np.abs(cal.gain[0] - LAM / (LAM + 0.25))) > 100 * se_a.max()


def test_interpolation_is_linear_in_log_sigma_and_refuses_to_extrapolate():
    cal = calibrate_denoiser(WienerModel(LAM), RNG.standard_normal((50, D)) * np.sqrt(LAM),
                             SIGMAS, rng=np.random.default_rng(2))
    for g, s in enumerate(SIGMAS):
        np.testing.assert_array_equal(cal.at(s)[0], cal.gain[g])
    mid = np.sqrt(SIGMAS[1] * SIGMAS[2])  # halfway in log sigma
    np.testing.assert_allclose(cal.at(mid)[0], 0.5 * (cal.gain[1] + cal.gain[2]), rtol=1e-13)
    for outside in (0.01, 5.0, float("nan")):
        with pytest.raises(InputError, match="outside the calibrated range"):
            cal.at(outside)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(samples=np.zeros((2, D))), "samples: expected an array of at least 3"),
    (dict(sigmas=[1.0, 0.5]), "sigmas: expected"),
    (dict(sigmas=[0.0, 1.0]), "sigmas: expected"),
    (dict(eigenvectors=np.eye(D + 1)), "eigenvectors: expected shape"),
    (dict(mean=np.zeros(D + 2)), "mean: expected"),
    (dict(model=lambda x, s: x[:, :2]), "model: returned shape"),
])
def test_bad_input_names_the_argument(kwargs, needle):
    args = dict(model=WienerModel(LAM), samples=np.ones((10, D)), sigmas=[1.0])
    args.update(kwargs)
    with pytest.raises(InputError, match=needle):
        calibrate_denoiser(args.pop("model"), args.pop("samples"), args.pop("sigmas"), **args)
