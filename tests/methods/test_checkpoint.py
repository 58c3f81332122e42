"""The ``checkpoint`` method: an external UNet in each supported format lands in the base model
bit-identical; a refused pickle, a mismatched checkpoint and a bad path are one-line errors."""

import argparse
import re

import pytest
import torch
from safetensors.torch import save_file

from relearnbench.api import Context
from relearnbench.config import instantiate
from relearnbench.errors import UserError
from relearnbench.registry import METHODS
from relearnbench.testing import tiny_model

CTX = Context(device="cpu", dtype=torch.float32, seed=0)


def to_compvis(state: dict, layers_per_block: int) -> dict:
    """A diffusers SD-1.x UNet state dict in the CompVis (original Stable Diffusion) key names, as
    ``model.diffusion_model.*`` in a training checkpoint's ``state_dict``. This key map lives only
    here, to build test files; relearnbench converts the other way with diffusers' own converter."""
    L = layers_per_block
    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
              "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    up_has_attention = {int(k.split(".")[1]) for k in state if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        head = next((h for h in fixed if key.startswith(h + ".")), None)
        if head:
            new = fixed[head] + key[len(head):]
        elif parts[0] in ("down_blocks", "up_blocks", "mid_block"):
            if parts[0] == "mid_block":
                i, kind, j, rest = 0, parts[1], int(parts[2]), parts[3:]
                place = f"middle_block.{2 * j if kind == 'resnets' else 1}"
            else:
                i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
                if parts[0] == "down_blocks":
                    layer = i * (L + 1) + j + 1
                    place = {"resnets": f"input_blocks.{layer}.0", "attentions": f"input_blocks.{layer}.1",
                             "downsamplers": f"input_blocks.{(i + 1) * (L + 1)}.0.op"}[kind]
                else:
                    layer = i * (L + 1) + j  # an up level has one layer more than a down level
                    place = {"resnets": f"output_blocks.{layer}.0", "attentions": f"output_blocks.{layer}.1",
                             "upsamplers": f"output_blocks.{i * (L + 1) + L}.{2 if i in up_has_attention else 1}"}[kind]
            if kind == "resnets":
                rest = [resnet.get(rest[0], rest[0])] + rest[1:]
            elif kind == "downsamplers":
                rest = rest[1:]  # "conv.weight" -> "op.weight"
            new = f"{place}.{'.'.join(rest)}"
        else:
            raise KeyError(key)
        out[f"model.diffusion_model.{new}"] = value
    return out


@pytest.fixture
def erased():
    """A tiny UNet whose weights differ from tiny_model()'s: what an 'external' method made."""
    return tiny_model(seed=1).unet.state_dict()


def load(path, **settings):
    method = instantiate(METHODS.get("checkpoint"), "toy", {"checkpoint": {"path": str(path), **settings}})
    model = tiny_model()
    method.unlearn(model, None, CTX)
    return model.unet.state_dict()


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compvis_key_map_inverts_diffusers_converter(erased):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = tiny_model().unet
    assert_same(convert_ldm_unet_checkpoint(to_compvis(erased, 1), dict(unet.config)), erased)


def test_every_format_loads_bit_identical(tmp_path, erased):
    base = tiny_model().unet.state_dict()
    assert any(not torch.equal(base[k], erased[k]) for k in base)
    tiny_model(seed=1).unet.save_pretrained(tmp_path / "folder" / "unet")  # a pipeline folder's unet/
    tiny_model(seed=1).unet.save_pretrained(tmp_path / "unet_only")
    save_file(erased, tmp_path / "unet.safetensors")
    torch.save(erased, tmp_path / "unet.bin")
    torch.save({"state_dict": to_compvis(erased, 1), "global_step": 7}, tmp_path / "sd.ckpt")
    save_file(to_compvis(erased, 1), tmp_path / "sd.safetensors")
    for name in ("folder", "unet_only", "unet.safetensors", "unet.bin", "sd.ckpt", "sd.safetensors"):
        assert_same(load(tmp_path / name), erased)


def test_a_refused_pickle_names_the_opt_in(tmp_path, erased):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": to_compvis(erased, 1), "hparams": argparse.Namespace(lr=1)}, path)
    with pytest.raises(UserError) as e:
        load(path)
    msg = str(e.value)
    assert "\n" not in msg and "argparse.Namespace" in msg
    assert "--set checkpoint.trust_pickle=true" in msg and ".safetensors" in msg
    assert_same(load(path, trust_pickle=True), erased)


def test_mismatched_keys_are_counted_and_named(tmp_path, erased):
    bad = dict(erased)
    del bad["conv_in.weight"], bad["conv_in.bias"]
    bad["extra.weight"] = torch.zeros(1)
    bad["conv_out.bias"] = torch.zeros(7)
    save_file(bad, tmp_path / "bad.safetensors")
    with pytest.raises(UserError) as e:
        load(tmp_path / "bad.safetensors")
    msg = str(e.value)
    assert "\n" not in msg
    assert re.search(r"2 missing \(conv_in\.weight, conv_in\.bias\)", msg), msg
    assert "1 unexpected (extra.weight)" in msg and "1 of another shape (conv_out.bias (7,) vs (4,))" in msg


@pytest.mark.parametrize("path, why", [("", "checkpoint.path is not set"), ("/no/such.ckpt", "no such file"),
                                       ("notes.txt", "unknown format .txt")])
def test_bad_paths_refused_when_planned(tmp_path, path, why):
    if path == "notes.txt":
        (tmp_path / path).write_text("hi")
        path = str(tmp_path / path)
    with pytest.raises(UserError, match=re.escape(why)):
        instantiate(METHODS.get("checkpoint"), "toy", {"checkpoint": {"path": path}})


def test_hash_covers_the_bytes_and_variants_have_their_own_namespace(tmp_path, erased):
    save_file(erased, tmp_path / "a.safetensors")
    used = set()
    a = instantiate(METHODS.get("checkpoint@a"), "toy", {"checkpoint@a": {"path": str(tmp_path / "a.safetensors")}},
                    None, used)
    assert used == {"checkpoint@a"} and a.config_name == "checkpoint@a"
    before = a.describe_config()["sha256"]
    erased["conv_in.bias"] = erased["conv_in.bias"] + 1
    save_file(erased, tmp_path / "a.safetensors")
    assert a.describe_config()["sha256"] != before
    assert METHODS.get("checkpoint@a") is METHODS.get("checkpoint@a")
    with pytest.raises(UserError, match="variant label"):
        METHODS.check("checkpoint@a.b")
