"""Helpers for tests of relearnbench and of third-party plugins: a tiny random-weight model of the
Stable Diffusion architecture (the same diffusers / transformers classes, ~0.3 M parameters)."""

from __future__ import annotations

import pathlib
import tempfile

from relearnbench.api import Concept, Model, Prompt


def sd_tokenizer():
    """Stable Diffusion 1.x's CLIP tokenizer, written offline from open_clip's BPE file."""
    from transformers import CLIPTokenizer

    from relearnbench.toy import TOY_DIR
    from relearnbench.toy.tokenizer import write_sd_tokenizer

    shipped = TOY_DIR / "model" / "tokenizer"
    if (shipped / "vocab.json").exists():
        return CLIPTokenizer.from_pretrained(shipped)
    folder = pathlib.Path(tempfile.gettempdir()) / "relearnbench-sd-tokenizer"
    if not (folder / "vocab.json").exists():
        write_sd_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder)


def tiny_model(seed: int = 0, resolution: int = 16, device="cpu", width: int = 1) -> Model:
    """``width``: the UNet's channels times this (its weights about width² as many; 1 = the ``tiny`` model)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from relearnbench.models import _assemble

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=resolution // 2, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16 * width, 32 * width), cross_attention_dim=32,
                                attention_head_dim=4 * width,
                                norm_num_groups=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        layers_per_block=1, norm_num_groups=8, sample_size=resolution,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64,
                                                num_hidden_layers=1, num_attention_heads=4,
                                                max_position_embeddings=77))
    # steps_offset=1 as SD's and the toy's configs: diffusers warns about (and overrides) any other value
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, steps_offset=1)
    return _assemble("tiny", unet, text_encoder, sd_tokenizer(), vae, scheduler, "toy",
                     f"tiny-{seed}" + (f"-x{width}" if width != 1 else ""), device, torch.float32)


def context(seed: int = 0, **kwargs):
    """A ``Context`` for a plugin test on the CPU in float32; its two samplers, the evaluation's and the generated
    training images', at their dataclass defaults (``SampleConfig()``, ``GenerateConfig()``) unless given."""
    import torch

    from relearnbench.api import Context
    from relearnbench.data import GenerateConfig
    from relearnbench.evaluate import SampleConfig

    return Context(**{"device": "cpu", "dtype": torch.float32, "seed": seed, "sample_config": SampleConfig(),
                      "generate_config": GenerateConfig(), **kwargs})


def load_tiny(name, config, meta, device="cpu", dtype=None) -> Model:
    """The ``tiny`` model plugin."""
    model = tiny_model(device=device)
    if dtype is not None:
        model.vae.to(dtype)
        model.text_encoder.to(dtype)
        model.dtype = dtype
    return model


def tiny_concept() -> Concept:
    """A toy-world concept usable with ``tiny_model``, its three roles disjoint. The defender's images are
    world renders too: a random tiny model would sample noise."""
    return Concept(name="triangle", description="test concept",
                   forget=(Prompt("a photo of a triangle"), Prompt("a plain red triangle")),
                   related=("a diamond",), unrelated=("a circle",), judge="toy",
                   target={"attribute": "shape", "value": "triangle"}, attack_data="world",
                   anchor="a shape", fid_reference="world",
                   train=("a triangle", "a blue triangle"), train_related=("a red diamond",),
                   train_unrelated=("a square",), train_data="world",
                   attack=("a green triangle", "a dotted triangle"), attack_related=("a yellow diamond",),
                   attack_unrelated=("a cross",))


class DataSpy:
    """Records the texts that reach a plugin's data path: every text the tokenizer encodes (training
    captions, and the prompts of images a model samples) and every prompt the toy world renders.
    ``paused`` stops recording (while the harness evaluates). With pytest's ``monkeypatch``, so the
    patches are undone after the test; the held-out protocol tests use it."""

    def __init__(self, monkeypatch, tokenizer):
        import relearnbench.toy.world as world

        self.texts: list[str] = []  # tokenized
        self.rendered: list[str] = []  # drawn by the toy world
        self.paused = False
        render, encode = world.sample_images, type(tokenizer).__call__

        def sample_images(prompts, n_per_prompt, seed):
            if not self.paused:
                self.rendered += list(prompts)
            return render(prompts, n_per_prompt, seed)

        def call(tok, text=None, *args, **kwargs):
            if not self.paused and text is not None:
                self.texts += [text] if isinstance(text, str) else list(text)
            return encode(tok, text, *args, **kwargs)

        monkeypatch.setattr(world, "sample_images", sample_images)
        monkeypatch.setattr(type(tokenizer), "__call__", call)

    def seen(self) -> set[str]:
        from relearnbench.concepts import normalise

        return {normalise(t) for t in self.texts + self.rendered}
