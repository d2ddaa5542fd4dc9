"""Noise-method plugins, one file each; importing this package registers them in METHODS."""

from . import ar, asr, clean, cuda, em, hypo, ntga, ops, random_noise, rem, sc, sem, tap  # noqa: F401
