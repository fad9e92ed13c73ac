"""Build the tiny default model locally: a character-level tokenizer and a small Qwen2.

No model hub is needed: the default recipe and the tests create this folder once and reuse it. vLLM, transformers
and DeepSpeed load it like any Hugging Face checkpoint.

The tokenizer is a Qwen2 (byte-level BPE) tokenizer with no merges and one vocabulary entry per character, so
every character is one token. It has to be: transformers 5 loads the tokenizer of any `qwen2` model folder as
`Qwen2Tokenizer`, rebuilding the pipeline (byte-level pre-tokenizer and decoder) from the vocabulary whatever
tokenizer.json says, so a plain character vocabulary saved from another tokenizer class reloads without spaces and
newlines ("a b\nc" -> 3 ids), in transformers and in vLLM alike.

    python -m rlhf.models.tiny --out models/tiny-qwen2
"""

from __future__ import annotations

import argparse
import json
import logging
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

logger = logging.getLogger(__name__)

PAD, EOS = "<pad>", "<eos>"
# Printable ASCII with space, tab and newline: arithmetic, and the `<tool_call>{"name": ...}</tool_call>` of tool use.
CHARACTERS = sorted(set(string.printable) - set("\x0b\x0c\r"))
# The chat template concatenates message contents: the tiny task needs no role markers.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
SPEC_FILE = "tiny_spec.json"
# Bump when build_tokenizer changes: a folder built by an older version is rebuilt (its spec file no longer matches).
TOKENIZER_VERSION = 2


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny Qwen2; every default keeps a step on 2 CPU cores in seconds."""

    hidden_size: int = 128  # head_dim 32: vLLM-CPU attention has no kernel for head_dim 16
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2  # exercises grouped-query attention like real Qwen2
    intermediate_size: int = 512
    max_position_embeddings: int = 256  # prompt + response must fit; config validation checks this
    tie_word_embeddings: bool = True  # like Qwen2.5-0.5B; weight sync must then send lm_head too
    seed: int = 0
    vocab_size: int | None = None  # pad the vocabulary to this size with unused tokens (None: characters only)


def _byte_level_symbol(ch: str) -> str:
    """The symbol byte-level BPE uses for a one-byte character (" " -> "Ġ", "\n" -> "Ċ", "a" -> "a")."""
    ((symbol, _),) = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(ch)
    return symbol


def build_tokenizer(vocab_size: int | None = None) -> PreTrainedTokenizerBase:
    """Character-level tokenizer: one token per character of CHARACTERS, with pad and eos specials.

    Characters outside CHARACTERS are dropped when encoding. Loading the saved folder with AutoTokenizer (or vLLM)
    gives the same ids.

    Args:
        vocab_size: pad the vocabulary to this many tokens with `<unused_i>` entries (a benchmark's round vocabulary
            size); text never encodes to them. None: the characters only.

    Raises:
        ValueError: vocab_size is smaller than the character vocabulary.
    """
    vocab = {PAD: 0, EOS: 1}
    for ch in CHARACTERS:
        vocab[_byte_level_symbol(ch)] = len(vocab)
    if vocab_size is not None:
        if vocab_size < len(vocab):
            raise ValueError(f"tiny model vocab_size={vocab_size} is below the {len(vocab)} characters and specials")
        for i in range(vocab_size - len(vocab)):
            vocab[f"<unused_{i}>"] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token=EOS, pad_token=PAD)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(out_dir: str | Path, spec: TinyModelSpec = TinyModelSpec(), overwrite: bool = False) -> Path:
    """Write tokenizer + randomly initialised Qwen2 to `out_dir` (skipped if the same spec is already there).

    Returns:
        The model folder, loadable by `AutoModelForCausalLM.from_pretrained` and `vllm.LLM`.
    """
    out = Path(out_dir)
    spec_path = out / SPEC_FILE
    if not overwrite and spec_path.exists() and json.loads(spec_path.read_text()) == _spec_record(spec):
        logger.info("tiny model already built at %s", out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec.vocab_size)
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(tiny_config(tokenizer, spec))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    spec_path.write_text(json.dumps(_spec_record(spec)))
    logger.info("built tiny model (%.2fM parameters) at %s", sum(p.numel() for p in model.parameters()) / 1e6, out)
    return out


def build_tiny_reward_model(out_dir: str | Path, spec: TinyModelSpec = TinyModelSpec(seed=7)) -> Path:
    """A randomly initialised 1-label sequence classifier with the tiny tokenizer (a stand-in reward model)."""
    out = Path(out_dir)
    spec_path = out / SPEC_FILE
    if spec_path.exists() and json.loads(spec_path.read_text()) == _spec_record(spec):
        return out
    tokenizer = build_tokenizer(spec.vocab_size)
    torch.manual_seed(spec.seed)
    config = tiny_config(tokenizer, spec)
    config.num_labels = 1
    model = Qwen2ForSequenceClassification(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    spec_path.write_text(json.dumps(_spec_record(spec)))
    return out


def _spec_record(spec: TinyModelSpec) -> dict:
    """What the spec file holds: the model shape (an unset vocab_size left out) and the tokenizer version."""
    record = {**asdict(spec), "tokenizer_version": TOKENIZER_VERSION}
    if record["vocab_size"] is None:
        del record["vocab_size"]
    return record


def tiny_config(tokenizer: PreTrainedTokenizerBase, spec: TinyModelSpec) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="models/tiny-qwen2", help="folder to write the model to")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if the same spec exists")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    build_tiny_model(args.out, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
