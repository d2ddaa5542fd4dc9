"""Victims: architectures (timm + CIFAR-stem variants + a tiny CNN) and training-time defenses."""

from . import archs, defenses  # noqa: F401  (registers VICTIMS and DEFENSES)
