"""The ``checkpoint`` method: an external UNet in each supported format lands in the base model
bit-identical; a refused pickle, a mismatched checkpoint and a bad path are one-line errors."""

import argparse
import re

import pytest
import torch
from safetensors.torch import save_file

from relearnbench.config import instantiate
from relearnbench.errors import UserError
from relearnbench.registry import METHODS
from relearnbench.testing import context, tiny_model

CTX = context(seed=0)


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


def test_compvis_key_map_inverts_diffusers_converter(erased, to_compvis):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = tiny_model().unet
    assert_same(convert_ldm_unet_checkpoint(to_compvis(erased, 1), dict(unet.config)), erased)


def test_every_format_loads_bit_identical(tmp_path, erased, to_compvis):
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


def test_a_refused_pickle_names_the_opt_in(tmp_path, erased, to_compvis):
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
    before = a.describe()  # what unlearn_key hashes
    erased["conv_in.bias"] = erased["conv_in.bias"] + 1
    save_file(erased, tmp_path / "a.safetensors")
    assert a.describe() != before and a.describe()["config"]["path"] == before["config"]["path"]
    assert METHODS.get("checkpoint@a") is METHODS.get("checkpoint@a")
    with pytest.raises(UserError, match="variant label"):
        METHODS.check("checkpoint@a.b")


def test_compvis_file_with_sd14_block_layout(tmp_path, to_compvis):
    """SD-1.4's UNet layout (four levels, two layers each, attention in three) at toy width: the
    CompVis conversion lands every tensor where SD-1.4's would."""
    from diffusers import UNet2DConditionModel

    from relearnbench.methods.checkpoint import check_fits, load_unet_state

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 32, 32, 32), layers_per_block=2,
                                cross_attention_dim=32, attention_head_dim=4)
    assert len(unet.down_blocks) == 4 and sum(hasattr(b, "attentions") for b in unet.up_blocks) == 3
    state = unet.state_dict()
    torch.save({"state_dict": to_compvis(state, 2)}, tmp_path / "sd14-layout.ckpt")
    loaded = load_unet_state(tmp_path / "sd14-layout.ckpt", unet.config)
    check_fits(loaded, state, "sd14-layout.ckpt")
    assert_same(loaded, state)


def test_a_text_encoder_release_loads_bit_identical_in_every_form(tmp_path):
    """checkpoint.text_encoder: a transformers folder, a pipeline folder's text_encoder/, a state dict with or without
    transformers 4's text_model. prefix, and the state dict AdvUnlearn's training script saves (a CustomTextEncoder:
    text_encoder.* and its parts again); the UNet stays the base's, and a UNet-only checkpoint's key is unchanged."""
    erased = tiny_model(seed=1).text_encoder
    want = erased.state_dict()
    erased.save_pretrained(tmp_path / "release")
    erased.save_pretrained(tmp_path / "pipeline" / "text_encoder")
    save_file({f"text_model.{k}": v for k, v in want.items()}, tmp_path / "te.safetensors")
    script = {f"text_encoder.text_model.{k}": v for k, v in want.items()}
    script.update({k.replace("embeddings.", "embedding.", 1): v for k, v in want.items()})
    torch.save(script, tmp_path / "TextEncoder-text_encoder_full-epoch_999.pt")
    unet = tiny_model().unet.state_dict()
    for name in ("release", "pipeline", "te.safetensors", "TextEncoder-text_encoder_full-epoch_999.pt"):
        method = instantiate(METHODS.get("checkpoint"), "toy", {"checkpoint": {"text_encoder": str(tmp_path / name)}})
        model = tiny_model()
        method.unlearn(model, None, CTX)
        assert_same(model.text_encoder.state_dict(), want)
        assert_same(model.unet.state_dict(), unet)
        assert len(method.describe()["config"]["text_encoder_sha256"]) == 64
    save_file(tiny_model(seed=1).unet.state_dict(), tmp_path / "unet.safetensors")
    config = instantiate(METHODS.get("checkpoint"), "toy", {"checkpoint": {"path": str(tmp_path / "unet.safetensors")}}
                         ).describe()["config"]
    assert set(config) == {"path", "trust_pickle", "sha256"}  # as before text encoders were read: the same keys
    with pytest.raises(UserError, match="checkpoint.text_encoder=.*: no such file"):
        instantiate(METHODS.get("checkpoint"), "toy", {"checkpoint": {"text_encoder": str(tmp_path / "nothing")}})


def test_an_unreadable_text_encoder_file_names_its_own_setting(tmp_path):
    """A text-encoder file that does not load names checkpoint.text_encoder and the text-encoder formats, not
    checkpoint.path's UNet formats (one reader serves both settings)."""
    bad = tmp_path / "te.pt"
    bad.write_bytes(b"not a pickle")
    method = instantiate(METHODS.get("checkpoint"), "toy", {"checkpoint": {"text_encoder": str(bad)}})
    with pytest.raises(UserError) as e:
        method.unlearn(tiny_model(), None, CTX)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"checkpoint.text_encoder={bad}: cannot load it with torch.load")
    assert "text-encoder or pipeline folder" in msg and "UNet" not in msg
