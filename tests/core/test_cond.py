"""One conditioning type for every model (``diffusion.Cond``): SD-1.x's hidden states, SDXL's two encoders'
penultimate hidden states side by side plus the pooled embedding and the time ids, each as diffusers' own
pipelines encode them; the random full-size architectures from their published configs (on the meta device,
nothing allocated); a diffusers folder of any of them recognised from its model_index.json."""

import dataclasses

import pytest
import torch

from relearnbench.api import Prompt
from relearnbench.diffusion import (Cond, denoising_loss, encode_text, encode_text_frozen,
                                    encode_text_with_embeddings, generate, image_jobs, initial_noise,
                                    input_embeddings, loss_target, predict, sample, tokenize)
from relearnbench.models import ModelConfig, folder_preset, load_model, load_sd_random, missing_files
from relearnbench.testing import TINY_MODELS, tiny_model, tiny_sdxl

ARCHS = list(TINY_MODELS)


def diffusers_pipeline(model):
    """diffusers' own pipeline of the model's components (``Model.components``)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if model.text_encoder_2 is not None:
        return StableDiffusionXLPipeline(**model.components(), force_zeros_for_empty_prompt=False)
    return StableDiffusionPipeline(**model.components(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def test_cond_batch_operations():
    h, p, t = torch.randn(3, 5, 4), torch.randn(3, 2), torch.randn(3, 6)
    c = Cond(h, p, t)
    assert len(c) == 3 and c.device == h.device
    both = Cond.cat([c, c[torch.tensor([2])]])
    assert len(both) == 4 and torch.equal(both.hidden[3], h[2]) and torch.equal(both.pooled[3], p[2])
    assert torch.equal(both.time_ids[3], t[2])
    one = c[1:2].expand(4)
    assert one.hidden.shape == (4, 5, 4) and torch.equal(one.pooled[3], p[1])
    assert [len(s) for s in c.split(2)] == [2, 1]
    assert c.to(torch.float64).pooled.dtype == torch.float64 and c.detach().time_ids is not None
    plain = Cond(h)  # SD-1.x: no added conditions, the UNet gets encoder_hidden_states only
    assert Cond.cat([plain, plain]).pooled is None and set(plain.unet_kwargs(torch.float32)) == {"encoder_hidden_states"}
    assert set(c.unet_kwargs(torch.float32)["added_cond_kwargs"]) == {"text_embeds", "time_ids"}


@pytest.mark.parametrize("arch", ARCHS)
def test_encoding_is_the_pipelines(arch):
    """encode_text gives what diffusers' pipeline encodes (StableDiffusionPipeline / StableDiffusionXLPipeline
    .encode_prompt): the hidden states, and for SDXL the pooled embedding; the time ids are the pipeline's."""
    model = TINY_MODELS[arch]()
    texts = ["a red triangle", ""]
    c = encode_text(model, texts)
    pipe = diffusers_pipeline(model)
    with torch.no_grad():
        out = pipe.encode_prompt(texts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    assert torch.equal(c.hidden, out[0])
    if arch == "tiny-sdxl":
        assert c.hidden.shape[-1] == 32 + 48  # both encoders, side by side
        assert torch.equal(c.pooled, out[2])
        ids = pipe._get_add_time_ids((16, 16), (0, 0), (16, 16), dtype=torch.float32,
                                     text_encoder_projection_dim=model.text_encoder_2.config.projection_dim)
        assert torch.equal(c.time_ids, ids.expand(2, -1))
    else:
        assert c.pooled is None and c.time_ids is None


def test_sdxl_unet_reads_the_added_conditions():
    model = tiny_sdxl()
    c = encode_text_frozen(model, ["a red triangle"])
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    base = predict(model.unet, x, t, c)
    assert not torch.equal(base, predict(model.unet, x, t, dataclasses.replace(c, pooled=c.pooled + 1)))
    assert not torch.equal(base, predict(model.unet, x, t, dataclasses.replace(c, time_ids=c.time_ids * 2)))


@pytest.mark.parametrize("arch", ARCHS)
def test_soft_prompt_with_the_tables_own_rows_is_the_prompt(arch):
    """encode_text_with_embeddings with each encoder's own embedding rows at the masked tokens encodes the prompt
    itself, SDXL's second encoder with its own padding after the end of text."""
    model = TINY_MODELS[arch]()
    ids = tokenize(model, ["a red triangle", "a square"])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 1:3] = True
    c = encode_text_with_embeddings(model, ids, mask, [table[ids[mask]] for table in input_embeddings(model)])
    ref = encode_text(model, ["a red triangle", "a square"])
    assert torch.allclose(c.hidden, ref.hidden, atol=1e-6)
    assert (c.pooled is None) == (ref.pooled is None)
    if c.pooled is not None:
        assert torch.allclose(c.pooled, ref.pooled, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_sample_and_generate_are_one_sampler(arch):
    """The pipeline (StableDiffusionXLPipeline for SDXL, with "" as its unconditional prompt) and our own DDIM
    loop draw the same images from the same seeds."""
    model = TINY_MODELS[arch]()
    prompts = [Prompt("a triangle"), Prompt("a square", guidance=2.0)]
    images = sample(model, prompts, 2, steps=3, guidance=5.0, seed=0)
    jobs = image_jobs(prompts, 2, 0, 5.0)
    noise = initial_noise(model, [torch.Generator().manual_seed(s) for *_, s in jobs])
    assert (generate(model, jobs, noise, steps=3) - images).abs().max() < 1e-5


def test_v_prediction_target():
    """SD-2.x trains on v = √ᾱ ε − √(1−ᾱ) x0: the loss target follows the scheduler's prediction_type."""
    model = tiny_model()
    model.scheduler.register_to_config(prediction_type="v_prediction")
    x0, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    a = model.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(loss_target(model, x0, noise, t), a.sqrt() * noise - (1 - a).sqrt() * x0, atol=1e-6)
    c = encode_text_frozen(model, ["a triangle"] * 2)
    assert torch.isfinite(denoising_loss(model, x0, c, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name, unet, text, text_2, cross", [
    # parameter counts of the published architectures (SDXL: UNet 2.57 B, text encoders 123 M + 695 M)
    ("sdxl-random", 2_567_463_684, 123_060_480, 694_659_840, 2048),
    ("sd2-random", 865_910_724, 340_387_840, None, 1024),
    ("sd14-random", 859_520_964, 123_060_480, None, 768),
])
def test_random_architectures_on_the_meta_device(name, unet, text, text_2, cross):
    from relearnbench.registry import MODELS

    with torch.device("meta"):
        model = load_sd_random(name, ModelConfig(resolution=64), MODELS.meta(name), device="meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.unet) == unet and count(model.text_encoder) == text
    assert (model.text_encoder_2 is None) == (text_2 is None)
    if text_2 is not None:
        assert count(model.text_encoder_2) == text_2
    assert model.unet.config.cross_attention_dim == cross and model.resolution == 64
    assert model.fingerprint == f"{MODELS.meta(name).get('architecture', 'sd14')}-random-seed0-64px"


def test_sd21_random_is_v_prediction():
    from relearnbench.registry import MODELS

    with torch.device("meta"):
        model = load_sd_random("sd2-random", ModelConfig(resolution=64), MODELS.meta("sd2-random"), device="meta")
    assert model.scheduler.config.prediction_type == "v_prediction" and model.preset == "sd21"


def test_an_sdxl_folder_loads_as_sdxl(tmp_path):
    """A diffusers folder written by StableDiffusionXLPipeline.save_pretrained loads with both text encoders
    (recognised from model_index.json) and encodes as the model it was saved from; one missing its second
    text encoder is reported by the preflight."""
    model = tiny_sdxl()
    diffusers_pipeline(model).save_pretrained(tmp_path / "xl")
    loaded = load_model(str(tmp_path / "xl"), ModelConfig())
    assert loaded.text_encoder_2 is not None and loaded.preset == folder_preset(tmp_path / "xl") == "sdxl"
    a, b = encode_text(model, ["a red triangle"]), encode_text(loaded, ["a red triangle"])
    assert torch.equal(a.hidden, b.hidden) and torch.equal(a.pooled, b.pooled)
    assert missing_files(str(tmp_path / "xl"), ModelConfig()) == []
    (tmp_path / "xl" / "text_encoder_2" / "config.json").unlink()
    assert any("text_encoder_2/config.json" in line for line in missing_files(str(tmp_path / "xl"), ModelConfig()))


def test_esd_u_leaves_sdxl_added_embedding_alone():
    """ESD-u trains neither the time embedding nor SDXL's added (pooled text, time ids) embedding, as ESD's SDXL
    script leaves out its "emb" modules; ESD-x trains the cross-attention only, here 80 features wide."""
    from relearnbench.methods.common import trainable

    unet = tiny_sdxl().unet
    u = [n for n, _ in trainable(unet, "u")]
    assert u and not any(n.startswith(("add_embedding.", "time_embedding.")) or ".attn2." in n for n in u)
    x = dict(trainable(unet, "x"))
    assert x and all(".attn2." in n for n in x)
    assert any(p.shape[-1] == 80 for n, p in x.items() if n.endswith("to_k.weight"))
