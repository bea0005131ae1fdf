"""Image captioning: LSTM (Show and Tell) and transformer decoders, masked cross-entropy, greedy and beam decoding,
BLEU/CIDEr metrics.

The vocabulary is the run's classes (``zoo.data.captions``: ``<pad>`` = 0, ``<bos>``, ``<eos>``, ``<unk>``, words).
Batches carry a :class:`zoo.data.captions.CaptionBatch` (``tokens [N, T]`` int64, ``<bos> w1 .. <eos>`` padded
with 0). A head is called ``head(features, images, target)``: it returns the encoded image ``memory`` and, given the
target captions, the teacher-forced ``logits [N, T-1, V]`` (position t predicts token t+1). Decoding is a separate
step, ``head.decode(outputs) -> tokens [N, L]`` (no ``<bos>``; ``<eos>`` then padding; greedy or beam search as the
spec says), which the metrics and ``zoo predict`` call outside the graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from heads.caption_metrics import cider_d, corpus_bleu
from zoo.backbones.base import FeatureInfo
from zoo.data.captions import BOS, EOS, PAD, CaptionBatch, decode
from zoo.draw import BLACK, GREEN, as_rgb, text_below, upscale
from zoo.recipe.spec import Range, spec
from zoo.task import Geometry, HeadContext, ImageGeometry, Task, check_level

__all__ = ["greedy_decode", "beam_search", "LstmCaptionHead",
           "TransformerCaptionHead", "LstmCaptioner", "TransformerCaptioner", "CaptionCrossEntropy",
           "CaptionMetrics", "CAPTIONING"]

Memory = tuple[torch.Tensor, ...]  # what a head's encoder gives the decoding steps; batch first in every tensor
StepFn = Callable[[Memory, torch.Tensor], torch.Tensor]  # (memory, prefix [B, t]) -> next-token logits [B, V]


@torch.no_grad()
def greedy_decode(step: StepFn, memory: Memory, *, max_length: int, stop_early: bool = True) -> torch.Tensor:
    """The most likely next word each step until ``<eos>``: ``tokens [B, L]`` (no ``<bos>``, padded after eos).

    ``stop_early=False`` always runs ``max_length`` steps (the same tokens, padded to ``max_length``): a loop whose
    length does not depend on values, which tracing for ``zoo export`` can unroll."""
    batch = memory[0].shape[0]
    prefix = torch.full((batch, 1), BOS, dtype=torch.int64, device=memory[0].device)
    done = torch.zeros(batch, dtype=torch.bool, device=prefix.device)
    for _ in range(max_length):
        word = step(memory, prefix).argmax(dim=1)
        word = torch.where(done, torch.full_like(word, PAD), word)
        prefix = torch.cat([prefix, word[:, None]], dim=1)
        done = done | (word == EOS)  # not |=: in-place or has no ONNX export
        if stop_early and done.all():
            break
    return prefix[:, 1:]


@torch.no_grad()
def beam_search(step: StepFn, memory: Memory, *, beam_size: int, max_length: int,
                length_penalty: float = 0.0) -> torch.Tensor:
    """Batched beam search: ``tokens [B, L]`` of the best finished hypothesis per image.

    Hypotheses are ranked by summed log-probability while searching; the final pick divides by
    ``length ** length_penalty`` (0: no normalisation; 1: mean log-probability per word). A finished
    hypothesis is carried along, padded at no cost, until every beam of the batch has ended.
    """
    batch, k = memory[0].shape[0], beam_size
    memory = tuple(m.repeat_interleave(k, dim=0) for m in memory)  # [B*K, ...]
    device = memory[0].device
    prefix = torch.full((batch * k, 1), BOS, dtype=torch.int64, device=device)
    scores = torch.full((batch, k), -math.inf, device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one, or the top-k would pick the same word k times
    done = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, device=device)
    for _ in range(max_length):
        logp = step(memory, prefix).float().log_softmax(dim=1)  # [B*K, V]
        vocab = logp.shape[1]
        ended = torch.full_like(logp, -math.inf)
        ended[:, PAD] = 0.0
        logp = torch.where(done[:, None], ended, logp)
        best, index = (scores.reshape(-1, 1) + logp).reshape(batch, k * vocab).topk(k, dim=1)  # [B, K]
        source = (index // vocab + torch.arange(batch, device=device)[:, None] * k).reshape(-1)
        word = (index % vocab).reshape(-1)
        prefix = torch.cat([prefix[source], word[:, None]], dim=1)
        lengths = lengths[source] + (~done[source]).float()
        done = done[source] | (word == EOS)
        scores = best
        if done.all():
            break
    final = scores / lengths.reshape(batch, k).clamp(min=1) ** length_penalty
    pick = final.argmax(dim=1) + torch.arange(batch, device=device) * k
    return prefix[pick, 1:]


class _Decoding(nn.Module):
    """What both decoders share: ``forward`` encodes the image (``memory``) and, given the target captions, gives
    the teacher-forced ``logits``; :meth:`generate` decodes (greedy or beam search) outside the graph."""

    def __init__(self, *, max_length: int, beam_size: int, length_penalty: float) -> None:
        super().__init__()
        self.max_length, self.beam_size, self.length_penalty = max_length, beam_size, length_penalty

    def encode(self, features: list[torch.Tensor]) -> Memory:
        raise NotImplementedError

    def step(self, memory: Memory, prefix: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, V]`` of the word after ``prefix [B, t]`` (which starts with ``<bos>``)."""
        return self.logits(memory, prefix)[:, -1]

    def logits(self, memory: Memory, prefix: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generate(self, memory: Memory) -> torch.Tensor:
        if self.beam_size == 1:
            return greedy_decode(self.step, memory, max_length=self.max_length)
        return beam_search(self.step, memory, beam_size=self.beam_size, max_length=self.max_length,
                           length_penalty=self.length_penalty)

    def forward(self, features: list[torch.Tensor], images: torch.Tensor | None = None,
                target: CaptionBatch | None = None) -> dict[str, torch.Tensor]:
        memory = self.encode(features)
        out = {"memory": memory[0]}  # [N, ...]: what generate() decodes from
        if target is not None:
            out["logits"] = self.logits(memory, target.tokens[:, :-1])  # [N, T-1, V]
        return out

    def decode(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``tokens [N, L]`` (no ``<bos>``; ``<eos>`` then padding) generated from ``forward``'s ``memory``."""
        return self.generate((outputs["memory"],))


class LstmCaptionHead(_Decoding):
    """Show and Tell: the pooled image feature, projected to a word embedding, is the LSTM's first input.

    Args:
        in_channels: channels of the deepest feature map (``feature_info[-1].channels``).
        vocab_size: output logits (the vocabulary, ``<pad>`` included).
        embed_dim / hidden / layers / dropout: word embedding width, LSTM state width and depth, dropout.
        max_length / beam_size / length_penalty: decoding (beam 1 is greedy).
    """

    def __init__(self, *, in_channels: int, vocab_size: int, embed_dim: int = 256, hidden: int = 512,
                 layers: int = 1, dropout: float = 0.1, max_length: int = 20, beam_size: int = 3,
                 length_penalty: float = 0.0) -> None:
        super().__init__(max_length=max_length, beam_size=beam_size, length_penalty=length_penalty)
        self.image = nn.Sequential(nn.Linear(in_channels, embed_dim), nn.LayerNorm(embed_dim))
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def encode(self, features: list[torch.Tensor]) -> Memory:
        return (self.image(features[-1].mean(dim=(2, 3))),)  # [N, E]

    def logits(self, memory: Memory, prefix: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([memory[0][:, None], self.embed(prefix)], dim=1)  # [N, 1 + t, E]
        hidden, _ = self.lstm(self.drop(inputs))
        return self.out(self.drop(hidden[:, 1:]))  # [N, t, V]: the image step predicts nothing


def _sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embeddings ``[P, dim]`` of float ``positions [P]``."""
    freq = torch.exp(torch.arange(0, dim, 2, device=positions.device) * (-math.log(10000.0) / dim))
    angle = positions[:, None] * freq[None]
    return torch.cat([angle.sin(), angle.cos()], dim=1)[:, :dim]


def _grid_embedding(height: int, width: int, dim: int, device: torch.device) -> torch.Tensor:
    """2-D sinusoidal position embedding ``[H*W, dim]``: half the channels for the row, half for the column."""
    rows = _sinusoid(torch.arange(height, device=device, dtype=torch.float32), dim // 2)
    cols = _sinusoid(torch.arange(width, device=device, dtype=torch.float32), dim - dim // 2)
    return torch.cat([rows[:, None].expand(-1, width, -1), cols[None].expand(height, -1, -1)], dim=2).reshape(-1, dim)


class TransformerCaptionHead(_Decoding):
    """A pre-norm ``nn.TransformerDecoder`` whose cross-attention reads the backbone's spatial feature grid.

    Args:
        in_channels: channels of the attended feature map (``feature_info[level].channels``).
        vocab_size: output logits.
        level: which backbone feature map to attend to (-1: the deepest).
        dim / heads / layers / ffn / dropout: transformer width, attention heads, decoder layers, MLP width, dropout.
        max_length / beam_size / length_penalty: decoding (beam 1 is greedy).
    """

    def __init__(self, *, in_channels: int, vocab_size: int, level: int = -1, dim: int = 256, heads: int = 8,
                 layers: int = 3, ffn: int = 1024, dropout: float = 0.1, max_length: int = 20, beam_size: int = 3,
                 length_penalty: float = 0.0) -> None:
        super().__init__(max_length=max_length, beam_size=beam_size, length_penalty=length_penalty)
        self.level, self.dim = level, dim
        self.project = nn.Sequential(nn.Conv2d(in_channels, dim, 1), nn.GroupNorm(1, dim))
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        layer = nn.TransformerDecoderLayer(dim, heads, ffn, dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(dim))
        self.out = nn.Linear(dim, vocab_size)

    def encode(self, features: list[torch.Tensor]) -> Memory:
        grid = self.project(features[self.level])  # [N, D, h, w]
        n, d, h, w = grid.shape
        return (grid.flatten(2).transpose(1, 2) + _grid_embedding(h, w, d, grid.device),)  # [N, h*w, D]

    def logits(self, memory: Memory, prefix: torch.Tensor) -> torch.Tensor:
        t = prefix.shape[1]
        words = self.embed(prefix) * math.sqrt(self.dim) + _sinusoid(
            torch.arange(t, device=prefix.device, dtype=torch.float32), self.dim)
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=prefix.device)
        # No key padding mask: padding only ever follows <eos>, and causal attention never looks ahead to it.
        hidden = self.decoder(words, memory[0], tgt_mask=causal, tgt_is_causal=True)
        return self.out(hidden)  # [N, t, V]


def _words(tokens: torch.Tensor, vocabulary: Sequence[str]) -> list[list[str]]:
    return [decode(row, vocabulary) for row in tokens.tolist()]


class CaptionMetrics(nn.Module):
    """``bleu1``..``bleu4`` and ``cider`` (CIDEr-D) of the decoded captions against every reference caption."""

    gathered = ("candidates", "references")  # joined across ranks before compute (zoo.engine.module)

    def __init__(self, classes: Sequence[str], decode: Callable[[dict], torch.Tensor]) -> None:
        super().__init__()
        self.vocabulary, self.decode = list(classes), decode
        self.candidates: list[list[str]] = []
        self.references: list[list[list[str]]] = []

    def update(self, outputs: dict[str, torch.Tensor], targets: CaptionBatch) -> None:
        self.candidates += _words(self.decode(outputs), self.vocabulary)
        self.references += targets.references

    def compute(self) -> dict[str, float]:
        if not self.candidates:
            return {**{f"bleu{n}": 0.0 for n in range(1, 5)}, "cider": 0.0}
        bleu = corpus_bleu(self.candidates, self.references)
        return {**{f"bleu{n}": b for n, b in enumerate(bleu, 1)}, "cider": cider_d(self.candidates, self.references)}

    def reset(self) -> None:
        self.candidates, self.references = [], []

    def save_artifacts(self, out_dir: Any) -> list:
        return []


def predict_captions(outputs: dict[str, torch.Tensor], head: HeadContext, geometry: Geometry) -> list[dict]:
    """The head's decoding (beam search or greedy, as its spec says) → ``{"caption": "a small red ..."}`` per image."""
    return [{"caption": " ".join(words)} for words in _words(head.module.decode(outputs), head.classes)]


def export_captions(outputs: dict[str, torch.Tensor], head: HeadContext, geometry: Geometry
                    ) -> dict[str, torch.Tensor]:
    """Encoder and **greedy** decoding in the graph (whatever the spec's ``beam_size``): ``tokens [N, max_length]``
    int64 word indices into the vocabulary (no ``<bos>``; ``<eos>`` then padding)."""
    module = head.module
    return {"tokens": greedy_decode(module.step, (outputs["memory"],), max_length=module.max_length,
                                    stop_early=False)}


def draw_caption(image: np.ndarray, prediction: dict, target: Any, classes: Sequence[str]) -> np.ndarray:
    """The image with its caption beneath, and the first reference caption beneath that when given."""
    picture, _ = upscale(as_rgb(image), min_side=160)
    lines, colors = [prediction["caption"]], [BLACK]
    if target:
        lines.append("true: " + " ".join(target[0]))
        colors.append(GREEN)
    return text_below(picture, lines, colors)


def judge_caption(prediction: dict, target: Any, classes: Sequence[str]) -> tuple[str, float, str]:
    """1 - the caption's own BLEU-4 against its references (BLEU-1 breaks ties)."""
    bleu = corpus_bleu([prediction["caption"].split()], [list(target)])
    return "lowest BLEU", (1 - bleu[3]) + (1 - bleu[0]) * 1e-3, f"BLEU-4 {bleu[3]:.2f}, BLEU-1 {bleu[0]:.2f}"


CAPTIONING = Task(name="captioning", target="caption", monitor="cider", mode="max",
                  metrics=("bleu1", "bleu2", "bleu3", "bleu4", "cider"),
                  make_metrics=lambda head: CaptionMetrics(head.classes, head.module.decode),
                  predict=predict_captions, draw=draw_caption, export=export_captions, judge=judge_caption,
                  shown=("bleu4", "cider"), legend="beneath each image: the generated caption; in green the first reference")


@spec
class LstmCaptioner:
    """Show-and-Tell LSTM decoder (:class:`LstmCaptionHead`) on the backbone's pooled deepest feature map."""

    num_classes: Annotated[int, Range(ge=5)] | None = None  # vocabulary size; None: the data's vocabulary
    embed_dim: Annotated[int, Range(ge=1)] = 256  # word (and projected image) embedding width
    hidden: Annotated[int, Range(ge=1)] = 512  # LSTM state width
    layers: Annotated[int, Range(ge=1)] = 1  # stacked LSTM layers
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.1  # on LSTM inputs and outputs
    max_length: Annotated[int, Range(ge=1)] = 20  # words generated at most (then <eos> is forced by stopping)
    beam_size: Annotated[int, Range(ge=1)] = 3  # 1: greedy decoding
    length_penalty: Annotated[float, Range(ge=0)] = 0.0  # final beam score = log-prob / length ** length_penalty

    task: ClassVar[Task] = CAPTIONING

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int,
              geometry: ImageGeometry | None = None) -> LstmCaptionHead:
        return LstmCaptionHead(in_channels=feature_info[-1].channels, vocab_size=num_classes,
                               embed_dim=self.embed_dim, hidden=self.hidden, layers=self.layers,
                               dropout=self.dropout, max_length=self.max_length, beam_size=self.beam_size,
                               length_penalty=self.length_penalty)


@spec
class TransformerCaptioner:
    """Transformer decoder (:class:`TransformerCaptionHead`) cross-attending to one backbone feature grid."""

    num_classes: Annotated[int, Range(ge=5)] | None = None  # vocabulary size; None: the data's vocabulary
    level: int = -1  # backbone feature map the decoder attends to (-1: deepest; -2: the one before, finer grid)
    dim: Annotated[int, Range(ge=2)] = 256  # transformer width (must divide by heads)
    heads: Annotated[int, Range(ge=1)] = 8  # attention heads
    layers: Annotated[int, Range(ge=1)] = 3  # decoder layers
    ffn: Annotated[int, Range(ge=1)] = 1024  # MLP width inside each layer
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.1  # in attention and MLP of every decoder layer
    max_length: Annotated[int, Range(ge=1)] = 20  # words generated at most
    beam_size: Annotated[int, Range(ge=1)] = 3  # 1: greedy decoding
    length_penalty: Annotated[float, Range(ge=0)] = 0.0  # final beam score = log-prob / length ** length_penalty

    task: ClassVar[Task] = CAPTIONING

    def __post_init__(self) -> None:
        from zoo.errors import RecipeError

        if self.dim % self.heads:
            raise RecipeError("dim", f"{self.dim} is not divisible by heads={self.heads}")

    def build(self, feature_info: Sequence[FeatureInfo], *, num_classes: int,
              geometry: ImageGeometry | None = None) -> TransformerCaptionHead:
        return TransformerCaptionHead(in_channels=check_level(feature_info, self.level).channels, vocab_size=num_classes,
                                      level=self.level, dim=self.dim, heads=self.heads, layers=self.layers,
                                      ffn=self.ffn, dropout=self.dropout, max_length=self.max_length,
                                      beam_size=self.beam_size, length_penalty=self.length_penalty)


class _MaskedCrossEntropy(nn.Module):
    def __init__(self, label_smoothing: float) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, outputs: dict[str, torch.Tensor], targets: CaptionBatch) -> dict[str, torch.Tensor]:
        logits, wanted = outputs["logits"], targets.tokens[:, 1:]  # [N, T-1, V], [N, T-1]
        return {"ce": F.cross_entropy(logits.flatten(0, 1).float(), wanted.flatten(), ignore_index=PAD,
                                      label_smoothing=self.label_smoothing)}


@spec
class CaptionCrossEntropy:
    """Cross-entropy of the teacher-forced logits against the next words; ``<pad>`` positions never count."""

    label_smoothing: Annotated[float, Range(ge=0, lt=1)] = 0.0  # mass spread evenly over the vocabulary

    task: ClassVar[Task] = CAPTIONING

    def build(self, head: nn.Module | None = None) -> nn.Module:
        return _MaskedCrossEntropy(self.label_smoothing)
