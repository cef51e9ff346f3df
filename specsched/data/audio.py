"""Reading audio files (wav, flac, ogg through ``soundfile``) as fixed-length mono frames.

Conventions
-----------
A file is decoded to float64 in ``[-1, 1]`` (libsndfile's scaling), mixed down to mono (mean
of the channels), resampled to ``sample_rate`` Hz with a polyphase filter
(:func:`scipy.signal.resample_poly`) and cut into consecutive, non-overlapping frames of
``frame_length`` samples; the incomplete last frame is dropped. A file shorter than one frame
gives no frame. Frames are 1-D signals: their Fourier axis is time, frequencies are in cycles
per sample (multiply by ``sample_rate`` for Hz).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from specsched.errors import InputError

__all__ = ["AUDIO_SUFFIXES", "audio_frame_count", "read_audio_frames"]

#: File suffixes read as audio (case-insensitive).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def _soundfile():
    try:
        import soundfile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(
            "audio files need the 'soundfile' package: pip install 'specsched[audio]' "
            "(and the libsndfile1 system library)"
        ) from exc
    return soundfile


def audio_frame_count(path: str | os.PathLike, sample_rate: int, frame_length: int) -> int:
    """Number of frames :func:`read_audio_frames` will return for a file (header only).

    Raises
    ------
    InputError
        Naming the file if soundfile cannot read its header.
    """
    sf = _soundfile()
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises RuntimeError / LibsndfileError
        raise InputError(f"{path}: cannot read the audio file ({exc})") from exc
    n = math.ceil(info.frames * sample_rate / info.samplerate)
    return n // frame_length


def read_audio_frames(path: str | os.PathLike, sample_rate: int = 16000,
                      frame_length: int = 16384) -> np.ndarray:
    """Decode one audio file into mono frames at a fixed sample rate.

    Parameters
    ----------
    path : path-like
        A wav, flac or ogg file.
    sample_rate : int
        Target rate in Hz (the file is resampled when its rate differs).
    frame_length : int
        Samples per frame.

    Returns
    -------
    ndarray of shape (n_frames, frame_length), float64
        Consecutive frames in ``[-1, 1]``; ``n_frames`` may be 0 for a short file.

    Raises
    ------
    InputError
        Naming the file if it cannot be decoded or holds non-finite samples.
    """
    from scipy.signal import resample_poly

    sf = _soundfile()
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the audio file ({exc})") from exc
    mono = data.mean(axis=1)
    if rate != sample_rate:
        g = math.gcd(int(rate), int(sample_rate))
        mono = resample_poly(mono, sample_rate // g, int(rate) // g)
    if not np.isfinite(mono).all():
        raise InputError(f"{path}: non-finite audio samples")
    n = mono.size // frame_length
    return np.ascontiguousarray(mono[: n * frame_length].reshape(n, frame_length))


def audio_files(folder: Path) -> list[Path]:
    """Audio files of a folder, sorted by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
