"""The toy judge: a small CNN with one classification head per attribute of the world.

It scores generated images (ASR: is the erased concept there?) and its penultimate features
stand in for Inception's in the toy world's FID (through clean-fid's custom feature extractor).
"""

from __future__ import annotations

import json
import pathlib

import torch
from torch import nn
from torch.nn import functional as F

from relearnbench.toy import world

WEIGHTS, CONFIG = "judge.safetensors", "config.json"


class ToyJudgeNet(nn.Module):
    """Images [N, 3, 32, 32] in [0, 1] → one logit vector per attribute."""

    def __init__(self, attributes: dict[str, list[str]] | None = None, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.attributes = {a: list(v) for a, v in (attributes or world.ATTRIBUTES).items()}
        self.width, self.feature_dim = width, feature_dim

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.body = nn.Sequential(
            *block(3, w), *block(w, w), nn.MaxPool2d(2),  # 16×16
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8×8
            *block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1),  # what, not where: position is not an attribute
            nn.Flatten(), nn.Linear(4 * w, feature_dim), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({a: nn.Linear(feature_dim, len(v)) for a, v in self.attributes.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, feature_dim] (the FID embedding)."""
        return self.body((images - 0.5) / 0.25)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)
        return {a: head(h) for a, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Index into ``self.attributes[attr]`` of the most likely value, per attribute."""
        return {a: logits.argmax(1) for a, logits in self(images).items()}

    def config(self) -> dict:
        return {"attributes": self.attributes, "width": self.width, "feature_dim": self.feature_dim}


def save_judge(net: ToyJudgeNet, directory) -> None:
    from safetensors.torch import save_file

    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / WEIGHTS))
    (out / CONFIG).write_text(json.dumps(net.config(), indent=2) + "\n")


def load_judge(directory) -> ToyJudgeNet:
    """The judge saved in ``directory``, in eval mode on the CPU."""
    from safetensors.torch import load_file

    d = pathlib.Path(directory)
    if not (d / WEIGHTS).exists():
        raise FileNotFoundError(f"no toy judge at {d} (expected {WEIGHTS}); rebuild with `relearnbench toy build`")
    net = ToyJudgeNet(**json.loads((d / CONFIG).read_text()))
    net.load_state_dict(load_file(str(d / WEIGHTS)))
    return net.eval()


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noise and blur, so that the judge holds up on generated images that are less crisp than
    the renderer's; neither can turn one attribute value into another."""
    n = images.shape[0]
    sigma = torch.rand(n, 1, 1, 1, generator=generator) * 0.06
    noisy = images + sigma * torch.randn(images.shape, generator=generator)
    kernel = torch.tensor([0.25, 0.5, 0.25])
    kernel = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(noisy, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    pick = (torch.rand(n, 1, 1, 1, generator=generator) < 0.3).float()
    return (pick * blurred + (1 - pick) * noisy).clamp(0, 1)


def train_judge(images: torch.Tensor, labels: dict[str, torch.Tensor], *, steps: int, batch_size: int = 64,
                lr: float = 2e-3, seed: int = 0, progress=None) -> ToyJudgeNet:
    """Fit a fresh judge on uint8 images [N, 3, 32, 32] and their attribute indices."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ToyJudgeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=g)
        logits = net(augment(images[idx].float() / 255, g))
        loss = sum(F.cross_entropy(logits[a], labels[a][idx]) for a in net.attributes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(loss=loss.item())
    return net.eval()
