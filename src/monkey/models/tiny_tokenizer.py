"""A CLIP BPE tokenizer written from a small vocabulary, in the hub's file layout.

The vocabulary holds CLIP's 256 byte symbols (bare and word-final) plus whole words of the harness's
prompts, so prompt words are single tokens (attention maps per word stay readable) and any other text
still tokenizes, character by character.
"""

import json
import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_symbols() -> list[str]:
    """CLIP/GPT-2's reversible byte -> printable unicode table, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def words_of(texts: Iterable[str]) -> list[str]:
    return sorted({w for text in texts for w in re.findall(r"[a-z]+", text.lower())})


def train_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """BPE merges learnt on the word list until every word is one token.

    A trained merge table is consistent (each word's merges apply in rank order without another
    word's merge blocking them), which hand-built per-word merge chains are not.
    """
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=1_000_000, min_frequency=1, end_of_word_suffix="</w>", show_progress=False)
    tokenizer.train_from_iterator(sorted(set(words)), trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [(left, right) for left, right in merges]


def write_tiny_clip_tokenizer(folder: Path, words: Iterable[str], max_length: int = 77) -> None:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = byte_symbols()
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols), BOS, EOS]:
        vocab.setdefault(token, len(vocab))
    merges = train_merges(words)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True, **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
