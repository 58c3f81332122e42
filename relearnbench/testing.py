"""Helpers for tests of relearnbench and of third-party plugins: a tiny random-weight model of the
Stable Diffusion architecture (the same diffusers / transformers classes, ~0.3 M parameters)."""

from __future__ import annotations

import pathlib
import tempfile

from relearnbench.api import Concept, Model, Prompt


def sd_tokenizer():
    """Stable Diffusion 1.x's CLIP tokenizer, written offline from open_clip's BPE file."""
    from transformers import CLIPTokenizer

    from relearnbench.models import TOY_DIR
    from relearnbench.toy.tokenizer import write_sd_tokenizer

    shipped = TOY_DIR / "model" / "tokenizer"
    if (shipped / "vocab.json").exists():
        return CLIPTokenizer.from_pretrained(shipped)
    folder = pathlib.Path(tempfile.gettempdir()) / "relearnbench-sd-tokenizer"
    if not (folder / "vocab.json").exists():
        write_sd_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder)


def tiny_model(seed: int = 0, resolution: int = 16, device="cpu") -> Model:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from relearnbench.models import _assemble

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=resolution // 2, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), cross_attention_dim=32, attention_head_dim=4,
                                norm_num_groups=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        layers_per_block=1, norm_num_groups=8, sample_size=resolution,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64,
                                                num_hidden_layers=1, num_attention_heads=4,
                                                max_position_embeddings=77))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False)
    return _assemble("tiny", unet, text_encoder, sd_tokenizer(), vae, scheduler, "toy", f"tiny-{seed}",
                     device, torch.float32)


def load_tiny(name, config, meta, device="cpu", dtype=None) -> Model:
    """The ``tiny`` model plugin."""
    model = tiny_model(device=device)
    if dtype is not None:
        model.vae.to(dtype)
        model.text_encoder.to(dtype)
        model.dtype = dtype
    return model


def tiny_concept() -> Concept:
    """A toy-world concept (real procedural attack data) usable with ``tiny_model``."""
    return Concept(name="triangle", description="test concept",
                   forget=(Prompt("a triangle"), Prompt("a red triangle")),
                   related=("a diamond",), unrelated=("a circle",), judge="toy",
                   target={"attribute": "shape", "value": "triangle"}, attack_data="world",
                   anchor="a shape", fid_reference="world")
