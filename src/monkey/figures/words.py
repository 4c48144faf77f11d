"""A prompt's text tokens grouped into the words a reader sees, by the pipeline's own tokenizer.

CLIP's BPE splits a rare word into several tokens ("plushie" may be "plu", "shie"); an attention
figure shows one panel per word. The grouping is the tokenizer's own (`word_ids()` of a fast
tokenizer): a word is what its pre-tokenizer splits on, so punctuation is a word of its own
("dog," is "dog" and ","). Positions are those of the padded, truncated sequence the text encoder
sees (`model_max_length`, 77 for CLIP); words past the truncation are not in it and have no panel.

Besides the words, the start token `@sot` and the first end token `@eot` can be selected; the
other padding positions (end tokens too, in CLIP) are never a panel of their own. Names are plain
Hydra strings (no quoting on the command line): a repeated word is `a@2`, `a@3`.
"""

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from monkey.errors import ConfigError

START, END = "@sot", "@eot"  # "@" never joins letters in a CLIP word: no prompt word has these names


@dataclass(frozen=True)
class Word:
    label: str  # unique panel name: the word's text, "@2", "@3" appended to repeats ("a", "a@2")
    text: str  # the word as written in the prompt
    positions: tuple[int, ...]  # its token positions in the text encoder's sequence
    special: bool = False  # @sot or @eot


def prompt_words(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[Word]:
    """@sot, the prompt's words in order, @eot: each with its token positions."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"word grouping needs a fast tokenizer (word_ids); the pipeline has {type(tokenizer).__name__}"
        )
    encoding = tokenizer(
        prompt,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_offsets_mapping=True,
    )
    word_ids = encoding.word_ids()
    offsets = encoding["offset_mapping"]
    grouped: dict[int, list[int]] = {}
    for position, word_id in enumerate(word_ids):
        if word_id is not None:
            grouped.setdefault(word_id, []).append(position)
    specials = [position for position, word_id in enumerate(word_ids) if word_id is None]
    words = [Word(START, START, (specials[0],), special=True)]
    seen: dict[str, int] = {}
    for positions in grouped.values():
        text = prompt[offsets[positions[0]][0] : offsets[positions[-1]][1]]
        seen[text] = seen.get(text, 0) + 1
        label = text if seen[text] == 1 else f"{text}@{seen[text]}"
        words.append(Word(label, text, tuple(positions)))
    if len(specials) > 1:  # the end token right after the words (CLIP keeps it when it truncates)
        words.append(Word(END, END, (specials[1],), special=True))
    return words


def select_words(words: list[Word], wanted: list[str] | None) -> list[Word]:
    """The prompt's words (no specials) when `wanted` is None, else the named ones in the order named."""
    if wanted is None:
        return [word for word in words if not word.special]
    by_label = {word.label: word for word in words}
    unknown = [name for name in wanted if name not in by_label]
    if unknown:
        raise ConfigError(f"words={list(wanted)} names {unknown}, not words of the prompt; allowed: {list(by_label)}")
    return [by_label[name] for name in wanted]
