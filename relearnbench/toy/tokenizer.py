"""Stable Diffusion 1.x's tokenizer, written offline from the BPE file open_clip ships.

SD-1.x uses OpenAI CLIP's tokenizer; open_clip carries the same byte-pair table
(``bpe_simple_vocab_16e6.txt.gz``), so vocab.json and merges.txt can be derived from it exactly as
CLIP's SimpleTokenizer builds its encoder, and ``transformers.CLIPTokenizer.from_pretrained(dir)``
then gives SD's ids with no download. The files are written and read back by path: transformers 5
silently ignores the ``vocab_file=``/``merges_file=`` keywords.
"""

from __future__ import annotations

import gzip
import json
import pathlib

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
N_MERGES = 49152 - 256 - 2  # CLIP's table size minus the byte alphabet and the two specials


def _bpe_file() -> pathlib.Path:
    import open_clip.tokenizer

    return pathlib.Path(open_clip.tokenizer.default_bpe())


def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from open_clip.tokenizer import bytes_to_unicode

    lines = gzip.open(_bpe_file()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]  # line 0 is a version header
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [t + "</w>" for t in alphabet] + ["".join(m) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_sd_tokenizer(directory) -> pathlib.Path:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json into
    ``directory``; returns it. Pads with ``<|endoftext|>`` (49407) as SD-1.x does."""
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                    encoding="utf-8")
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    config = {**specials, "tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH,
              "do_lower_case": True, "add_prefix_space": False, "errors": "replace"}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    return out
