"""A character-level tokenizer over printable ASCII (the tiny model's lacks "<", ">", "{", "}", "_"), with
chat-marker special tokens, for tests of the tool-call and chat-template paths."""

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

from rlhf.models.tiny import TinyModelSpec, tiny_config

PAD, EOS, IM_START, IM_END = "<pad>", "<|im_end|>", "<|im_start|>", "<|im_end|>"

# A Qwen-like template with a tool role (and a system line naming the tools): consecutive tool messages share one user block, wrapped in
# <tool_response> tags; assistant turns end with <|im_end|> (the eos token).
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: {{ tools | map(attribute='function.name') | join(', ') }}<|im_end|>\n"
    "{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}<|im_start|>user{% endif %}"
    "{{ '\\n<tool_response>\\n' + m['content'] + '\\n</tool_response>' }}"
    "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}<|im_end|>\n{% endif %}"
    "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Like the tiny model's: contents concatenated, no roles (so no tool role).
PLAIN_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def build_ascii_tokenizer(chat_template: str = TOOL_TEMPLATE) -> PreTrainedTokenizerFast:
    """One token per printable ASCII character, plus <pad>, <|im_start|> and <|im_end|> (the eos)."""
    vocab = {PAD: 0, EOS: 1, IM_START: 2}
    for ch in sorted(set(string.printable) - set("\x0b\x0c\r")):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, additional_special_tokens=[IM_START]
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def build_ascii_tiny_model(out_dir: Path) -> Path:
    """The tiny Qwen2 (rlhf.models.tiny's shape, random weights) over the ASCII tokenizer, loadable by vLLM."""
    if (out_dir / "config.json").exists():
        return out_dir
    tokenizer = build_ascii_tokenizer()
    spec = TinyModelSpec()
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(tiny_config(tokenizer, spec))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    return out_dir
