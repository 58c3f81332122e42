"""Helpers for tests of relearnbench and of third-party plugins: tiny random-weight models of the Stable
Diffusion and SDXL architectures (the same diffusers / transformers classes, ~0.3 M parameters)."""

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


def tiny_sdxl(seed: int = 0, resolution: int = 16, device="cpu") -> Model:
    """A tiny random SDXL: two text encoders of different widths (32 and 48, so the UNet's cross-attention reads
    80 = 32 + 48 concatenated features), the second with a projection (its pooled ``text_embeds``), and a UNet
    with SDXL's ``text_time`` added embedding (6 time ids × 8 + 16 pooled = 64 inputs)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from relearnbench.models import _assemble

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=resolution // 2, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), cross_attention_dim=80, attention_head_dim=4,
                                norm_num_groups=8, use_linear_projection=True,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=6 * 8 + 16)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        layers_per_block=1, norm_num_groups=8, sample_size=resolution,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    # two layers each: SDXL conditions on the penultimate one
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64,
                                                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=16, hidden_act="gelu"))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, steps_offset=1)
    tokenizer_2 = sd_tokenizer()
    tokenizer_2.pad_token = "!"  # as SDXL's second tokenizer (OpenCLIP's padding): other ids after the end of text
    return _assemble("tiny-sdxl", unet, text_encoder, sd_tokenizer(), vae, scheduler, "toy", f"tiny-sdxl-{seed}",
                     device, torch.float32, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)


def _frozen_in(model: Model, dtype) -> Model:
    if dtype is not None:
        model.vae.to(dtype)
        model.text_encoder.to(dtype)
        if model.text_encoder_2 is not None:
            model.text_encoder_2.to(dtype)
        model.dtype = dtype
    return model


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
    return _frozen_in(tiny_model(device=device), dtype)


def load_tiny_sdxl(name, config, meta, device="cpu", dtype=None) -> Model:
    """The ``tiny-sdxl`` model plugin."""
    return _frozen_in(tiny_sdxl(device=device), dtype)


# the tiny models by name, for tests that run every plugin on every architecture
TINY_MODELS = {"tiny": tiny_model, "tiny-sdxl": tiny_sdxl}


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
