"""The constant caption embedding, computed from a CLIP text encoder's weights without transformers.

InstantRestore conditions its UNet on one fixed caption, so its prompt is a constant
[1, 77, 1024] tensor.  The official checkpoint carries the SD-Turbo text encoder (a Hugging Face
``CLIPTextModel`` state dict under ``net.text_encoder.``) but not the tokenizer; the caption's
77 token ids under CLIP's BPE are a constant too.  This module runs that encoder's forward pass
(token + position embeddings, pre-LayerNorm causal transformer, final LayerNorm: the
``last_hidden_state`` the official code uses) in plain torch, so conversion needs neither
transformers nor a tokenizer download.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn.functional as F

from ..errors import CheckpointError

CAPTION = "A high-quality photo of a person; professional, 8k"
# CLIP BPE (bpe_simple_vocab_16e6, shared by OpenAI CLIP and OpenCLIP) of the lower-cased caption:
# a / high / - / quality / photo / of / a / person / ; / professional / , / 8 / k
CAPTION_WORD_IDS = (320, 1400, 268, 3027, 1125, 539, 320, 2533, 282, 4774, 267, 279, 330)
BOS_ID = 49406
EOS_ID = 49407
# SD 2.x / SD-Turbo tokenizers pad with "!" (id 0), as OpenCLIP does; SD 1.x pads with EOS.
SD2_PAD_ID = 0
MAX_LENGTH = 77


def caption_token_ids(pad_id: int = SD2_PAD_ID, length: int = MAX_LENGTH) -> torch.Tensor:
    """[1, length] ids of the InstantRestore caption: BOS, words, EOS, padding."""
    ids = [BOS_ID, *CAPTION_WORD_IDS, EOS_ID]
    ids += [pad_id] * (length - len(ids))
    return torch.tensor([ids], dtype=torch.long)


_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")


def _num_layers(sd: Mapping[str, torch.Tensor]) -> int:
    idx = {int(m.group(1)) for k in sd if (m := _LAYER.match(k))}
    if not idx or idx != set(range(max(idx) + 1)):
        raise CheckpointError("the text encoder weights have no complete set of transformer layers")
    return max(idx) + 1


def _layer_norm(x: torch.Tensor, sd: Mapping[str, torch.Tensor], name: str, eps: float) -> torch.Tensor:
    w, b = sd[f"{name}.weight"].float(), sd[f"{name}.bias"].float()
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def _linear(x: torch.Tensor, sd: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.linear(x, sd[f"{name}.weight"].float(), sd[f"{name}.bias"].float())


def encode_text(sd: Mapping[str, torch.Tensor], token_ids: torch.Tensor, hidden_act: str = "gelu",
                head_dim: int = 64, eps: float = 1e-5) -> torch.Tensor:
    """last_hidden_state [B, T, C] (float32) of a HF CLIPTextModel state dict for `token_ids`.

    hidden_act: "gelu" for SD 2.x / SD-Turbo (OpenCLIP ViT-H), "quick_gelu" for SD 1.x.
    head_dim 64 holds for both (16 heads of 64 in ViT-H, 12 in ViT-L).
    """
    # transformers 4.x names start with "text_model."; 5.x drops that prefix
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    try:
        tok = sd["embeddings.token_embedding.weight"].float()
        pos = sd["embeddings.position_embedding.weight"].float()
        t = token_ids.shape[1]
        x = tok[token_ids] + pos[:t].unsqueeze(0)
        b, _, c = x.shape
        heads = c // head_dim
        causal = torch.full((t, t), float("-inf")).triu(1)
        for i in range(_num_layers(sd)):
            p = f"encoder.layers.{i}"
            h = _layer_norm(x, sd, f"{p}.layer_norm1", eps)

            def split(y: torch.Tensor) -> torch.Tensor:
                return y.reshape(b, t, heads, head_dim).transpose(1, 2)

            q = split(_linear(h, sd, f"{p}.self_attn.q_proj"))
            k = split(_linear(h, sd, f"{p}.self_attn.k_proj"))
            v = split(_linear(h, sd, f"{p}.self_attn.v_proj"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=causal)
            x = x + _linear(a.transpose(1, 2).reshape(b, t, c), sd, f"{p}.self_attn.out_proj")
            h = _linear(_layer_norm(x, sd, f"{p}.layer_norm2", eps), sd, f"{p}.mlp.fc1")
            h = h * torch.sigmoid(1.702 * h) if hidden_act == "quick_gelu" else F.gelu(h)
            x = x + _linear(h, sd, f"{p}.mlp.fc2")
        return _layer_norm(x, sd, "final_layer_norm", eps)
    except KeyError as exc:
        raise CheckpointError(f"the text encoder weights lack {exc.args[0]}; is this a CLIP text "
                              "encoder in Hugging Face (transformers) layout?") from exc


def caption_embedding(sd: Mapping[str, torch.Tensor], pad_id: int = SD2_PAD_ID,
                      hidden_act: str = "gelu") -> torch.Tensor:
    """[1, 77, C] embedding of the InstantRestore caption under the given text encoder."""
    with torch.no_grad():
        return encode_text(sd, caption_token_ids(pad_id), hidden_act=hidden_act)
