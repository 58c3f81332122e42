"""Every registered model loads as diffusers components that fit together, or says where it looked
for weights this machine lacks and which --set key provides them."""

import pytest
import torch

from relearnbench.errors import UserError
from relearnbench.models import ModelConfig, load_model
from relearnbench.registry import MODELS

# a full-size SD-1.4 with random weights (1 B parameters): tests/toy/test_sd14_random.py runs it, marked slow
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n == "sd14-random" else n for n in MODELS.list()]


@pytest.mark.parametrize("name", NAMES)
def test_model_loads_components_that_fit(name):
    preset = MODELS.meta(name)["preset"]
    assert preset in ("toy", "sd14") and MODELS.description(name)
    try:
        model = load_model(name, ModelConfig())
    except UserError as e:
        assert "--set model.path=" in str(e)
        return
    assert model.preset == preset and model.fingerprint
    factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
    assert model.unet.config.sample_size * factor == model.resolution
    ids = model.tokenizer(["a triangle"], padding="max_length", max_length=model.tokenizer.model_max_length,
                          return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = model.text_encoder(ids)[0]
    assert hidden.shape[-1] == model.unet.config.cross_attention_dim


def test_only_sd14_random_takes_a_resolution():
    with pytest.raises(UserError, match="multiple of 64"):  # refused before the 1 B weights are built
        load_model("sd14-random", ModelConfig(resolution=100))
    with pytest.raises(UserError, match="model.resolution=64: model tiny draws at 16 px only"):
        load_model("tiny", ModelConfig(resolution=64))
