"""The CLIP two-tower of medjax/configs/clip_vit_s16.py written plainly in PyTorch (eager): the
peer medjax's train step is timed against (benchmarks/peer_benchmark.py). Needs the `[bench]`
extra (torch).

The same computation as medjax's model, layer for layer: a pre-LN ViT on flattened patches
(a stride-p convolution here) with fixed 2-D sin-cos positions, mean-pooled after the final norm;
a pre-LN text encoder over token + learned position embeddings with key padding masks, pooled at
position 0; bias-free projection heads, unit-norm embeddings, the CLIP loss with the learned
temperature capped at 100 over the valid pairs; one step = forward, backward, global-norm
clipping and AdamW with the same hyperparameters and decay mask (matrices only). `load_medjax`
copies a medjax parameter tree in, so both sides can be checked to compute the same loss.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medjax.models import vit as medjax_vit


class Block(nn.Module):
  """Pre-LN block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, width: int, heads: int, mlp_dim: int):
    super().__init__()
    self.heads = heads
    self.norm_attn = nn.LayerNorm(width, eps=1e-6)
    self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
    self.out = nn.Linear(width, width)
    self.norm_mlp = nn.LayerNorm(width, eps=1e-6)
    self.up = nn.Linear(width, mlp_dim)
    self.down = nn.Linear(mlp_dim, width)

  def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    b, t, d = x.shape
    h = self.norm_attn(x)
    split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
    q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
    return x + self.down(F.gelu(self.up(self.norm_mlp(x)), approximate="tanh"))


class Tower(nn.Module):
  def __init__(self, width: int, depth: int, heads: int, mlp_dim: int):
    super().__init__()
    self.blocks = nn.ModuleList(Block(width, heads, mlp_dim) for _ in range(depth))
    self.norm = nn.LayerNorm(width, eps=1e-6)

  def forward(self, x, key_mask=None):
    for block in self.blocks:
      x = block(x, key_mask)
    return self.norm(x)


class Clip(nn.Module):
  """forward(images [B, H, W, C] float, ids [B, T] int64, mask [B, T] bool) ->
  (image_emb, text_emb [B, proj] unit-norm, scale: the capped exp(logit_scale))."""

  def __init__(self, image: dict, text: dict, proj_dim: int):
    super().__init__()
    p, w = image["patch_size"], image["width"]
    grid = image["image_size"] // p
    self.stem = nn.Conv2d(image["channels"], w, p, stride=p)
    self.register_buffer("positions", torch.from_numpy(medjax_vit.sincos_2d(grid, grid, w)))
    self.image = Tower(w, image["depth"], image["heads"], image["mlp_dim"])
    self.tokens = nn.Embedding(text["vocab_size"], text["width"])
    self.text_positions = nn.Parameter(torch.zeros(text["max_len"], text["width"]))
    self.text = Tower(text["width"], text["depth"], text["heads"], text["mlp_dim"])
    self.image_head = nn.Linear(w, proj_dim, bias=False)
    self.text_head = nn.Linear(text["width"], proj_dim, bias=False)
    self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

  def forward(self, images, ids, mask):
    x = self.stem(images.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2) + self.positions
    image_pooled = self.image(x).mean(1)
    t = self.tokens(ids) + self.text_positions[: ids.shape[1]]
    text_pooled = self.text(t, mask[:, None, None, :])[:, 0]
    return (F.normalize(self.image_head(image_pooled), dim=-1, eps=1e-6),
            F.normalize(self.text_head(text_pooled), dim=-1, eps=1e-6),
            torch.clamp(self.logit_scale.exp(), max=100.0))


def clip_loss(image_emb, text_emb, scale, pairs) -> torch.Tensor:
  """Symmetric InfoNCE over the valid pairs (invalid rows neither anchors nor candidates)."""
  logits = scale * image_emb @ text_emb.T
  neg = torch.finfo(logits.dtype).min
  row = F.log_softmax(logits.masked_fill(~pairs[None, :], neg), dim=1).diagonal()
  col = F.log_softmax(logits.masked_fill(~pairs[:, None], neg), dim=0).diagonal()
  n = pairs.sum().clamp(min=1)
  return -0.5 * ((row * pairs).sum() + (col * pairs).sum()) / n


class Trainer:
  """One train step of `Clip` at a medjax config's hyperparameters (config.optim)."""

  def __init__(self, config, *, bf16: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    m = config.model
    self.model = Clip(dict(m.image), dict(m.text), m.proj_dim)
    self.bf16 = bf16
    o = config.optim
    decay = [p for p in self.model.parameters() if p.ndim >= 2]
    rest = [p for p in self.model.parameters() if p.ndim < 2]
    self.optimizer = torch.optim.AdamW(
        [dict(params=decay, weight_decay=o.weight_decay), dict(params=rest, weight_decay=0.0)],
        lr=o.lr, betas=(o.b1, o.b2), eps=1e-8, fused=True)
    warmup, total, end = o.warmup_steps, config.total_steps, o.end_lr_fraction

    def lr_factor(step):  # optax.warmup_cosine_decay_schedule's shape
      if step < warmup:
        return step / warmup
      frac = min(1.0, (step - warmup) / max(total - warmup, 1))
      return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * frac))

    self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
    self.grad_clip = o.grad_clip

  def loss(self, batch: dict) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
      image_emb, text_emb, scale = self.model(batch["image"], batch["text_ids"],
                                              batch["text_mask"])
    return clip_loss(image_emb.float(), text_emb.float(), scale, batch["pairs"])

  def step(self, batch: dict) -> float:
    """Forward, backward, clip, AdamW; a non-finite gradient skips the update (as medjax)."""
    self.optimizer.zero_grad(set_to_none=True)
    loss = self.loss(batch)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
    if torch.isfinite(norm):
      self.optimizer.step()
    self.schedule.step()
    return loss.item()


def torch_batch(batch: dict) -> dict:
  """medjax batch arrays (numpy or jax) -> the tensors `Trainer` reads."""
  get = lambda k: torch.from_numpy(np.array(batch[k]))
  return dict(image=get("image"), text_ids=get("text_ids").long(), text_mask=get("text_mask"),
              pairs=get("has_image") & get("has_text"))


def load_medjax(model: Clip, params: dict) -> None:
  """Copies a medjax MedMLLM parameter tree (pure dict of arrays, stacked layers) into `model`."""
  t = lambda x: torch.from_numpy(np.array(x, np.float32))
  im, tx = params["image"], params["text"]
  patch = model.stem.kernel_size[0]
  with torch.no_grad():
    kernel = t(im["stem"]["kernel"])  # [p * p * c, width], patches flattened (row, col, channel)
    model.stem.weight.copy_(kernel.reshape(patch, patch, -1, kernel.shape[1]).permute(3, 2, 0, 1))
    model.stem.bias.copy_(t(im["stem"]["bias"]))
    model.tokens.weight.copy_(t(tx["embed"]["tokens"]["embedding"]))
    model.text_positions.copy_(t(tx["embed"]["positions"]))
    for tower, src in ((model.image, im), (model.text, tx)):
      _load_tower(tower, src, t)
    model.image_head.weight.copy_(t(params["image_head"]["kernel"]).T)
    model.text_head.weight.copy_(t(params["text_head"]["kernel"]).T)
    model.logit_scale.copy_(t(params["logit_scale"]))


def _load_tower(tower: Tower, src: dict, t) -> None:
  layers = src["blocks"]["layers"]
  for i, block in enumerate(tower.blocks):
    for name in ("query", "key", "value"):
      kernel = t(layers["attn"][name]["kernel"][i])  # [width, heads, head_dim]
      getattr(block, name).weight.copy_(kernel.reshape(kernel.shape[0], -1).T)
      getattr(block, name).bias.copy_(t(layers["attn"][name]["bias"][i]).reshape(-1))
    out = t(layers["attn"]["out"]["kernel"][i])  # [heads, head_dim, width]
    block.out.weight.copy_(out.reshape(-1, out.shape[-1]).T)
    block.out.bias.copy_(t(layers["attn"]["out"]["bias"][i]))
    for name in ("up", "down"):
      getattr(block, name).weight.copy_(t(layers["mlp"][name]["kernel"][i]).T)
      getattr(block, name).bias.copy_(t(layers["mlp"][name]["bias"][i]))
    for name in ("norm_attn", "norm_mlp"):
      getattr(block, name).weight.copy_(t(layers[name]["scale"][i]))
      getattr(block, name).bias.copy_(t(layers[name]["bias"][i]))
  tower.norm.weight.copy_(t(src["norm"]["scale"]))
  tower.norm.bias.copy_(t(src["norm"]["bias"]))
