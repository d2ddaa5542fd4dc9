"""Noise-method plugins, one file each; importing this package registers them in METHODS."""

from . import clean, em, random_noise, rem, sc, sem, tap  # noqa: F401
