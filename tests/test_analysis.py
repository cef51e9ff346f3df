"""RAPSD, power law, band powers, SNR, f_max and the `analyze` command."""

import json

import numpy as np
import pytest

from specsched.analysis import (
    band_powers,
    fit_power_law,
    max_detectable_frequency,
    rapsd,
    rapsd_of_field,
    snr_map,
)
from specsched.analysis.report import analyze
from specsched.data.sources import FASHION_MNIST_DIR, SONIC_PI_DIR
from specsched.errors import InputError, OutputExistsError


@pytest.mark.parametrize("shape", [(8, 8), (9, 9), (6, 11), (10,), (7,)])
def test_rapsd_length_and_white_noise(shape):
    radial, freq = rapsd(np.ones(shape))
    L = max(shape)
    assert radial.shape == freq.shape == (L // 2 + L % 2,)  # pysteps' output length
    np.testing.assert_allclose(radial, 1.0)
    np.testing.assert_allclose(freq, np.fft.fftfreq(L)[: L // 2 + L % 2])


def test_rapsd_of_field_matches_direct_ring_average():
    field = np.random.default_rng(0).standard_normal((16, 16))
    radial, freq = rapsd_of_field(field)
    psd = np.fft.fftshift(np.abs(np.fft.fft2(field)) ** 2 / 256)
    y, x = np.mgrid[-8:8, -8:8]
    r = np.sqrt(x**2 + y**2).round()
    np.testing.assert_allclose(radial[3], psd[r == 3].mean())


def test_power_law_recovers_exponent():
    f = np.linspace(0, 0.5, 65)
    p = np.where(f > 0, 3.0 * np.maximum(f, 1e-9) ** -2.0, 100.0)
    fit = fit_power_law(f, p)
    assert fit.exponent == pytest.approx(2.0, abs=1e-10) and fit.r2 == pytest.approx(1.0)
    assert fit.amplitude == pytest.approx(3.0)
    with pytest.raises(InputError):
        fit_power_law(np.array([0.0, 0.1]), np.array([1.0, 1.0]))


def test_band_powers_sum_to_one():
    P = np.random.default_rng(1).random((8, 8))
    edges, pi = band_powers(P, 4)
    assert edges.shape == (5,) and pi.sum() == pytest.approx(1.0)
    _, pi1 = band_powers(np.eye(1, 16, 0).ravel(), 3)  # all power at DC
    np.testing.assert_allclose(pi1, [1, 0, 0])


def test_snr_and_fmax():
    ab = np.array([0.9, 0.5, 0.1])
    snr = snr_map([1.0, 0.1], ab)
    np.testing.assert_allclose(snr, [[9, 0.9], [1, 0.1], [1 / 9, 1 / 90]])
    fm = max_detectable_frequency(np.array([0.0, 0.1, 0.2]), np.array([10.0, 1.0, 0.1]), ab,
                                  tau=1.0)
    np.testing.assert_allclose(fm, [0.1, 0.1, 0.0])


def test_analyze_digits(tmp_path):
    s = analyze("digits", tmp_path / "out", steps=(4,))
    assert 0.5 < s["power_law"]["exponent"] < 5
    assert sum(s["band_powers"]["pi"]) == pytest.approx(1.0)
    assert s["fourier_vs_full"]["trace_fourier"] == pytest.approx(
        s["fourier_vs_full"]["trace_full"])
    for name in s["files"]:
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["dimension"] == 64
    with pytest.raises(OutputExistsError):
        analyze("digits", tmp_path / "out", steps=(4,))


def test_analyze_cifar10_eigenvalues_skips_rapsd(tmp_path):
    s = analyze("cifar10", tmp_path, steps=(4,))
    assert "power_law" not in s and any("skipped" in n for n in s["notes"])
    assert not (tmp_path / "rapsd.png").exists() and (tmp_path / "transfer.png").exists()


@pytest.mark.skipif(not SONIC_PI_DIR.is_dir(), reason="Debian sonic-pi-samples absent")
def test_analyze_audio(tmp_path):
    s = analyze("sonic-pi-samples", tmp_path, steps=(3,),
                source_options={"sample_rate": 8000, "frame_length": 256})
    assert s["power_law"]["unit"] == "cycles / sample" and s["dimension"] == 256


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian dataset-fashion-mnist absent")
def test_analyze_fashion_mnist(tmp_path):
    s = analyze("fashion-mnist", tmp_path, steps=(3,))
    assert s["n_samples"] == 70000 and s["dimension"] == 784
