"""EDM preconditioning (specsched.unet.edm): the identities that define it (Karras et al. 2022)."""

from __future__ import annotations

import numpy as np
import pytest

from specsched.errors import InputError
from specsched.unet.edm import (
    P_MEAN,
    P_STD,
    edm_loss_weight,
    edm_preconditioning,
    edm_training_sigmas,
)

SIGMAS = np.geomspace(0.002, 80.0, 9)


@pytest.mark.parametrize("sigma_data", [0.5, 1.3])
def test_input_and_target_have_unit_variance_for_data_of_variance_sigma_data(sigma_data):
    c_skip, c_out, c_in, _ = edm_preconditioning(SIGMAS, sigma_data)
    np.testing.assert_allclose(c_in**2 * (sigma_data**2 + SIGMAS**2), 1.0, rtol=1e-14)
    target_var = ((1 - c_skip) ** 2 * sigma_data**2 + c_skip**2 * SIGMAS**2) / c_out**2
    np.testing.assert_allclose(target_var, 1.0, rtol=1e-12)
    # and by Monte Carlo, on samples
    rng = np.random.default_rng(0)
    x0 = sigma_data * rng.standard_normal((200_000, 1))
    x = x0 + SIGMAS * rng.standard_normal((200_000, SIGMAS.size))
    np.testing.assert_allclose(np.var(c_in * x, axis=0), 1.0, rtol=0.02)
    np.testing.assert_allclose(np.var((x0 - c_skip * x) / c_out, axis=0), 1.0, rtol=0.02)


def test_with_no_network_the_denoiser_is_the_isotropic_wiener_filter():
    sigma_data = 0.5
    c_skip, _, _, c_noise = edm_preconditioning(SIGMAS, sigma_data)
    np.testing.assert_allclose(c_skip, sigma_data**2 / (sigma_data**2 + SIGMAS**2), rtol=1e-15)
    np.testing.assert_allclose(c_noise, np.log(SIGMAS) / 4.0, rtol=1e-15)


def test_loss_weight_is_one_over_c_out_squared():
    _, c_out, _, _ = edm_preconditioning(SIGMAS, 0.7)
    np.testing.assert_allclose(edm_loss_weight(SIGMAS, 0.7) * c_out**2, 1.0, rtol=1e-14)


def test_training_levels_are_log_normal():
    s = edm_training_sigmas(100_000, np.random.default_rng(1))
    log = np.log(s)
    assert abs(log.mean() - P_MEAN) < 4 * P_STD / np.sqrt(s.size)
    assert abs(log.std() - P_STD) < 0.02


def test_torch_tensors_give_the_same_numbers():
    torch = pytest.importorskip("torch")
    ours = edm_preconditioning(torch.tensor(SIGMAS), 0.5)
    ref = edm_preconditioning(SIGMAS, 0.5)
    for a, b in zip(ours, ref, strict=True):
        assert isinstance(a, torch.Tensor)
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-15)


@pytest.mark.parametrize("call, needle", [
    (lambda: edm_preconditioning(0.0), "sigma: expected noise levels > 0"),
    (lambda: edm_preconditioning(np.array([1.0, -1.0])), "sigma: expected"),
    (lambda: edm_preconditioning(1.0, sigma_data=0.0), "sigma_data"),
    (lambda: edm_loss_weight(0.0), "sigma: expected"),
    (lambda: edm_training_sigmas(0, np.random.default_rng()), "n: expected"),
])
def test_bad_levels_are_refused(call, needle):
    with pytest.raises(InputError, match=needle):
        call()
