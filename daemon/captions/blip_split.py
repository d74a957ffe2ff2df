"""BLIP's captioning model cut into the two pieces a compiled runtime runs: encoder and one step.

`generate` runs the text decoder over its whole cache at every token, with the cross-attention
keys and values of the image recomputed or re-read through Python at each step. For a compiled
runtime the work is split where it repeats:

- `ImageEncoder`: pixels -> the vision features, plus every decoder layer's cross-attention keys
  and values of them. These depend on the image only, so they are computed once per image; the
  keys already divided by sqrt(head size), which the step would otherwise do to all of them at
  every token (measured: OpenVINO moves that scaling onto the keys, 70% of a step's time).
- `DecoderStep`: one new token for each caption, from the token before it, its position, the
  self-attention keys/values of the tokens so far (a cache of fixed length, masked beyond the
  position) and the cross-attention keys/values. It returns the greedy choice and the new
  token's own keys/values, which the caller writes into its cache.

Both reuse the checkpoint's own modules (Linear, LayerNorm, embeddings), so the weights are the
ones `from_pretrained` loaded, and compute what transformers computes, in the same order but
for one step: the keys are divided by sqrt(head size) before the product with the query, not
the scores after it as `BlipTextSelfAttention` does (the same numbers where sqrt(head size) is
a power of two, as BLIP's 8).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class ImageEncoder(nn.Module):
    """pixel_values [B,3,S,S] -> image_embeds [B,N,E], cross_keys / sqrt(D) and cross_values [L,B,H,N,D]."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.vision = model.vision_model
        self.layers = model.text_decoder.bert.encoder.layer
        text = model.config.text_config
        self.heads = text.num_attention_heads
        self.head_size = text.hidden_size // text.num_attention_heads
        self.scale = math.sqrt(self.head_size)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_embeds = self.vision(pixel_values=pixel_values)[0]
        batch, patches, _ = image_embeds.shape
        shape = (batch, patches, self.heads, self.head_size)
        keys, values = [], []
        for layer in self.layers:
            attention = layer.crossattention.self
            keys.append(attention.key(image_embeds).view(shape).transpose(1, 2) / self.scale)
            values.append(attention.value(image_embeds).view(shape).transpose(1, 2))
        return image_embeds, torch.stack(keys), torch.stack(values)


class DecoderStep(nn.Module):
    """One greedy decoding step for a batch of captions.

    Inputs: token [B,1] (int64), position [1] (int64), past_mask [1,1,1,T] (0 where a cached
    position is filled, a large negative number elsewhere), logit_bias [V] (added before the
    choice: how `min_new_tokens` keeps the end token out), past_keys / past_values [L,B,H,T,D],
    cross_keys / cross_values [L,B,H,N,D] (the keys divided by sqrt(D), as ImageEncoder gives them).

    Outputs: next_token [B] (int64), new_keys / new_values [L,B,H,1,D] (the input token's own,
    for the caller to store at `position`).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        decoder = model.text_decoder
        self.embeddings = decoder.bert.embeddings
        self.layers = decoder.bert.encoder.layer
        self.head = decoder.cls
        text = model.config.text_config
        self.heads = text.num_attention_heads
        self.head_size = text.hidden_size // text.num_attention_heads
        self.scale = math.sqrt(self.head_size)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.heads, self.head_size).transpose(1, 2)

    def _attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Attention over `keys` already divided by sqrt(head size)."""
        scores = torch.matmul(query, keys.transpose(-1, -2))
        if mask is not None:
            scores = scores + mask
        context = torch.matmul(torch.softmax(scores, dim=-1), values)
        batch = context.shape[0]
        return context.transpose(1, 2).reshape(batch, 1, self.heads * self.head_size)

    def forward(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        past_mask: torch.Tensor,
        logit_bias: torch.Tensor,
        past_keys: torch.Tensor,
        past_values: torch.Tensor,
        cross_keys: torch.Tensor,
        cross_values: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embeddings = self.embeddings.word_embeddings(token) + self.embeddings.position_embeddings(position)
        hidden = self.embeddings.LayerNorm(embeddings)
        # The token's own key always takes part; the cache's only where filled.
        mask = torch.cat([past_mask, torch.zeros_like(past_mask[..., :1])], dim=-1)
        new_keys, new_values = [], []
        for index, layer in enumerate(self.layers):
            attention = layer.attention.self
            query = self._split_heads(attention.query(hidden))
            key = self._split_heads(attention.key(hidden))
            value = self._split_heads(attention.value(hidden))
            new_keys.append(key)
            new_values.append(value)
            keys = torch.cat([past_keys[index], key], dim=2) / self.scale
            values = torch.cat([past_values[index], value], dim=2)
            hidden = layer.attention.output(self._attend(query, keys, values, mask), hidden)

            cross = layer.crossattention
            query = self._split_heads(cross.self.query(hidden))
            hidden = cross.output(self._attend(query, cross_keys[index], cross_values[index], None), hidden)

            hidden = layer.output(layer.intermediate(hidden), hidden)
        logits = self.head(hidden)[:, 0, :] + logit_bias
        return torch.argmax(logits, dim=-1), torch.stack(new_keys), torch.stack(new_values)
