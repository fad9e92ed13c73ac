"""Turning an environment's observation into the tokens appended after a model turn (tokenised once, never again).

With a chat template that has a tool role, the observation is rendered by the template itself: render a
conversation ending in an assistant message whose content is a sentinel, followed by the observation messages and
the next assistant turn's generation prompt, and keep the text after the sentinel (the usual "render and take the
difference" trick). That text starts with the template's end-of-assistant marker, which the model has not produced
when its turn stopped at a stop string (e.g. "</tool_call>"); if the turn ended with that special token, it is
dropped. Without a tool role, observations are wrapped in a text template (`<tool_response>...</tool_response>`).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from rlhf.agent.env import Messages, Observation

logger = logging.getLogger(__name__)

ObservationMode = Literal["auto", "chat_template", "text"]
DEFAULT_TOOL_TEMPLATE = "<tool_response>\n{content}\n</tool_response>\n"
DEFAULT_USER_TEMPLATE = "{content}\n"
_SENTINEL = "RLHF-AGENT-SENTINEL-7f3a"
_PROBE = "rlhf-agent-probe-91c2"


def as_messages(observation: Observation) -> Messages:
    """An observation as chat messages: a string is the content of one tool message."""
    return [{"role": "tool", "content": observation}] if isinstance(observation, str) else observation


def _render_after_assistant(tokenizer: Any, messages: Messages) -> str:
    """Template text that follows an assistant turn: the messages, then the next generation prompt."""
    base = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(base + messages, tokenize=False, add_generation_prompt=True)
    return text[text.rindex(_SENTINEL) + len(_SENTINEL) :]


def has_tool_role(tokenizer: Any) -> bool:
    """The tokenizer's chat template renders a tool message, and differently from a user message."""
    if not getattr(tokenizer, "chat_template", None):
        return False
    try:
        as_tool = _render_after_assistant(tokenizer, [{"role": "tool", "content": _PROBE}])
        as_user = _render_after_assistant(tokenizer, [{"role": "user", "content": _PROBE}])
    except Exception:  # templates that reject the role (or non-alternating turns) raise TemplateError and others
        return False
    return _PROBE in as_tool and as_tool != as_user


class ObservationFormatter:
    """Encodes observations for one tokenizer, in chat-template or text mode (chosen once)."""

    def __init__(
        self,
        tokenizer: Any,
        mode: ObservationMode = "auto",
        tool_template: str = DEFAULT_TOOL_TEMPLATE,
        user_template: str = DEFAULT_USER_TEMPLATE,
    ) -> None:
        """
        Args:
            tokenizer: a Hugging Face tokenizer.
            mode: "chat_template" (needs a template with a tool role), "text", or "auto" (the template when it has
                a tool role, else text).
            tool_template: text mode: how a tool message is written; "{content}" is replaced by its content.
            user_template: text mode: how any other message (environment feedback) is written.

        Raises:
            ValueError: mode="chat_template" with a template without a tool role, or a template without
                "{content}" (naming agent.observation_*).
        """
        for key, template in (("tool_template", tool_template), ("user_template", user_template)):
            if "{content}" not in template:
                raise ValueError(f"agent.observation_{key}={template!r} must contain '{{content}}'")
        template_ok = mode != "text" and has_tool_role(tokenizer)
        if mode == "chat_template" and not template_ok:
            raise ValueError(
                "agent.observation_mode='chat_template' but the tokenizer's chat template has no tool role"
            )
        self.tokenizer = tokenizer
        self.uses_chat_template = template_ok
        self.tool_template, self.user_template = tool_template, user_template
        self._special_ids = set(getattr(tokenizer, "all_special_ids", []))
        logger.info("observations are rendered with %s", "the chat template" if template_ok else "the text template")

    def render(self, observation: Observation, last_token_id: int | None = None) -> str:
        """The observation's text, given the last token of the model turn it follows."""
        messages = as_messages(observation)
        if not self.uses_chat_template:
            return "".join(
                (self.tool_template if m.get("role") == "tool" else self.user_template).replace(
                    "{content}", m["content"]
                )
                for m in messages
            )
        text = _render_after_assistant(self.tokenizer, messages)
        if last_token_id is not None and last_token_id in self._special_ids:
            # The turn ended with a special token (its end marker): the template's copy of it must not repeat.
            marker = self.tokenizer.decode([last_token_id])
            if marker and text.startswith(marker):
                text = text[len(marker) :]
        return text

    def encode(self, observation: Observation, last_token_id: int | None = None) -> list[int]:
        """The observation's token ids (no special tokens added beyond those the template writes)."""
        return list(self.tokenizer.encode(self.render(observation, last_token_id), add_special_tokens=False))
