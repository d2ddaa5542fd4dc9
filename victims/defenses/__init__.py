"""Training-time defenses, one file each; importing this package registers them in DEFENSES (and ``grids`` the
named grids of them, ``--defense @iss``)."""

from . import adversarial, bdr, crop_flip, cutout, grayscale, grids, jpeg, lowpass, mix, oproj, standard, ueraser  # noqa: F401
