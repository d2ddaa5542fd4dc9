"""Training-time defenses, one file each; importing this package registers them in DEFENSES."""

from . import adversarial, bdr, crop_flip, cutout, grayscale, jpeg, lowpass, mix, oproj, standard, ueraser  # noqa: F401
