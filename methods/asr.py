"""``asr``: Fang et al., "Re-thinking Data Availability Attacks Against Deep Neural Networks" (CVPR 2024).

Built on the REM code base, and run here through the shared alternation of :mod:`methods._minmin`. The paper
argues that REM's noise objective (the loss at the worst point of the rho_a ball) is the wrong target, and
changes both halves of the alternation:

- the *noise* step is EM's: sign descent of ``CE(f(T(x + delta)), y)`` with an expectation over ``samples``
  augmentations, from a fresh uniform start, with **no** inner maximisation;
- the *surrogate* step keeps REM's PGD adversarial training on the augmented protected batch and adds a term
  that pushes the surrogate's predictions on the augmented *clean* batch toward the uniform distribution:
  ``CE(f(T(x + delta) + delta_a), y) + weight * mean_i || softmax(f(T'(x_i))) - 1/K ||``, with ``delta_a`` the
  PGD example at rho_a. The surrogate thus learns the noise while learning nothing from the clean images.

Source: the official code (github.com/EuterpeK/Rethinking-Data-Availability-Attacks, commit c81452c,
``generate.py``, ``attacks/robust_workers.py`` ``PGDDefender``, ``run.sh``); the paper's own equations could
not be read, so the objective below is the code's. Confirmed from the code: the noise step, the adversarial
loss (PGD-10 at 4/255, step 0.8/255, random start: run.sh's flags; the attacker's file is not in the snapshot
read, so that it is REM's PGD is assumed), the penalty (the L2 distance between the
softmax and the uniform vector, averaged over the batch; **squared** in the code's branch for every data set
but CIFAR-10), ``weight`` 1.0, the clean forward in train mode (BN statistics see both batches, the adversarial
one first) with a fresh draw of the training augmentation, and every number of ``run.sh`` (REM's generation
script: 5000 steps, LR 0.1 x 0.1 every 2000, K_u 10 x 1.6/255, J 5). Not confirmed: whether the paper's
tables used these scripts' numbers, and which penalty the paper writes (KL or cross-entropy to the uniform
distribution would be the usual choices; the code uses neither).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from benchmarks.noise import Meter, NoiseMethod
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet
from methods._minmin import MinMinConfig, run_minmin, surrogate_loss
from methods.em import cross_entropy_objective


def uniform_penalty(logits: Tensor, squared: bool = False) -> Tensor:
    """Batch mean of the L2 distance between each softmax and the uniform distribution (squared if asked).

    0 exactly when every prediction is uniform; at most ``sqrt(1 - 1/K)`` (one-hot predictions).

    Shape:
        logits: float ``(B, K)``; result: a scalar.

    Example:
        >>> float(uniform_penalty(torch.zeros(2, 10)))
        0.0
    """
    probs = logits.float().softmax(1)
    distance = torch.linalg.vector_norm(probs - 1.0 / probs.shape[1], dim=1)
    return (distance.square() if squared else distance).mean()


@METHODS.register("asr")
class ASRNoise(NoiseMethod):
    """EM noise steps against an adversarially trained surrogate kept uninformative on the clean images.

    Example:
        >>> c = ASRNoise().config
        >>> (c.samples, c.adv_radius, c.adv_steps, c.weight, c.penalty)
        (5, 4.0, 10, 1.0, 'l2')
    """

    name = "asr"
    citation = "Fang et al., Re-thinking Data Availability Attacks Against Deep Neural Networks, CVPR 2024"
    url = "https://arxiv.org/abs/2305.10691"

    @dataclass(frozen=True)
    class Config(MinMinConfig):
        """REM's generation settings (run.sh of the official code, confirmed) plus the clean-output penalty.

        The inherited defaults are those of ``run.sh``: 5000 steps, batch 128, SGD 0.1/0.9/5e-4 with LR x 0.1
        every 2000 steps, K_u 10 steps of 1.6/255 from a uniform start, J = 5 EOT samples of crop+flip,
        surrogate PGD-10 at rho_a 4/255 with step 0.8/255 and a random start, then a final pass.
        """

        #: weight of the penalty on the surrogate's clean predictions (``--weight 1.0`` in run.sh; confirmed)
        weight: float = 1.0
        #: ``l2``: mean L2 distance of the softmax to the uniform vector (the code's CIFAR-10 branch);
        #: ``squared_l2``: its square (the code's branch for CIFAR-100, Tiny-ImageNet and the ImageNet subset)
        penalty: Literal["l2", "squared_l2"] = "l2"

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.weight < 0:
                raise ValueError(f"asr.weight must be >= 0, got {self.weight}")

    def train_loss(
        self,
        model: nn.Module,
        protected: Tensor,
        clean: Tensor,
        y: Tensor,
        cfg: MinMinConfig,
        generator: torch.Generator,
    ) -> Tensor:
        """The surrogate's loss: REM's adversarial (rho_a > 0) cross-entropy on the protected views, plus
        ``weight`` times the uniformity penalty of its predictions on a fresh augmentation of the clean batch.

        Both forwards run in the model's current (train) mode, the adversarial one first, as in the code; the
        clean forward runs whatever the weight (at ``weight`` 0 its BN statistics still update, as in the code).

        Shape:
            protected: float ``(B, C, H', W')`` augmented protected views; clean: float ``(B, C, H, W)`` in [0, 1],
            not augmented; y: int64 ``(B,)``; result: a scalar.
        """
        loss = surrogate_loss(model, protected, y, cfg, generator)
        view = cfg.transform(clean, generator)
        if protected.is_contiguous(memory_format=torch.channels_last) and not protected.is_contiguous():  # as the views
            view = view.contiguous(memory_format=torch.channels_last)
        penalty = uniform_penalty(model(view), squared=self.config.penalty == "squared_l2")
        return loss + self.config.weight * penalty

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        return run_minmin(train, budget, ctx, meter, self.config, cross_entropy_objective, self.name, self.train_loss)
