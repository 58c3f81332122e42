"""Every registered model loads as diffusers components that fit together, or says where it looked
for weights this machine lacks and which --set key provides them."""

import pytest
import torch

from relearnbench.diffusion import encode_text
from relearnbench.errors import UserError
from relearnbench.models import ModelConfig, load_model
from relearnbench.registry import MODELS

# the full-size random-weight architectures (SD-1.4 1 B parameters, SD-2.1 1.3 B, SDXL 3.5 B): marked slow;
# tests/toy/test_sd14_random.py runs SD-1.4's, tests/core/test_cond.py builds the others on the meta device
FULL_SIZE = ("sd14-random", "sd2-random", "sdxl-random")
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in FULL_SIZE else n for n in MODELS.list()]


@pytest.mark.parametrize("name", NAMES)
def test_model_loads_components_that_fit(name):
    preset = MODELS.meta(name)["preset"]
    assert preset in ("toy", "sd14", "sd21", "sdxl") and MODELS.description(name)
    try:
        model = load_model(name, ModelConfig())
    except UserError as e:
        assert "--set model.path=" in str(e)
        return
    assert model.preset == preset and model.fingerprint
    factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
    assert model.unet.config.sample_size * factor == model.resolution
    with torch.no_grad():
        c = encode_text(model, ["a triangle"])
    assert c.hidden.shape[-1] == model.unet.config.cross_attention_dim
    # SDXL's added conditions fit the UNet's added embedding: pooled text embedding + 6 time ids
    added = model.unet.config.projection_class_embeddings_input_dim
    assert (c.pooled is None) == (added is None)
    if added is not None:
        assert c.pooled.shape[-1] + 6 * model.unet.config.addition_time_embed_dim == added


def test_only_sd14_random_takes_a_resolution():
    with pytest.raises(UserError, match="multiple of 64"):  # refused before the 1 B weights are built
        load_model("sd14-random", ModelConfig(resolution=100))
    with pytest.raises(UserError, match="model.resolution=64: model tiny draws at 16 px only"):
        load_model("tiny", ModelConfig(resolution=64))
