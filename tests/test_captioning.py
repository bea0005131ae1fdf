"""Captioning: tokenizer and vocabulary, adapters and their errors, masked loss, greedy/beam decoding, BLEU/CIDEr,
and a tiny train → eval (beam and greedy) → predict run through the engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heads import CaptionCrossEntropy, LstmCaptioner, TransformerCaptioner
from heads.caption_metrics import cider_d, corpus_bleu
from heads.captioning import (CaptionMetrics, LstmCaptionHead, TransformerCaptionHead, beam_search, draw_caption,
                              greedy_decode)
from zoo.backbones.base import FeatureInfo
from zoo.data import CocoCaptionData, ShapesCaptionData
from zoo.data.captions import BOS, EOS, PAD, UNK, CaptionBatch, build_vocabulary, decode, encode, tokenize
from zoo.data.targets import collate_captions, collate_samples
from zoo.errors import RecipeError, ZooError
from zoo.recipe import BackboneSpec, Optim, Recipe, Trainer

# ---------------------------------------------------------------- tokenizer and vocabulary


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("A Dog, running.") == ["a", "dog", ",", "running", "."]
    assert tokenize("  ") == []


def test_vocabulary_order_min_freq_and_round_trip():
    vocab = build_vocabulary(["a red circle", "a blue circle", "A red square."], min_freq=2)
    assert vocab[:4] == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert vocab[4:] == ("a", "circle", "red")  # most frequent first, ties a→z; "blue"/"square"/"." seen once
    index = {w: i for i, w in enumerate(vocab)}
    ids = encode("a red circle", index)
    assert ids[0] == BOS and ids[-1] == EOS
    assert decode(ids, vocab) == ["a", "red", "circle"]
    assert decode([*ids, PAD, PAD], vocab) == ["a", "red", "circle"]  # stops at <eos>


def test_unseen_words_become_unk_and_never_crash():
    vocab = build_vocabulary(["a red circle"])
    index = {w: i for i, w in enumerate(vocab)}
    ids = encode("a purple hexagon!", index)
    assert ids[2:5] == [UNK, UNK, UNK]
    assert decode(ids, vocab) == ["a", "<unk>", "<unk>", "<unk>"]
    assert decode([BOS, 999, -5, EOS], vocab) == ["<unk>", "<unk>"]  # ids outside the vocabulary too


# ---------------------------------------------------------------- adapters and bad inputs


def _coco_captions(root: Path, entries: dict[int, list], *, files: dict[int, str] | None = None) -> Path:
    """``root/images/<id>.png`` for each image id and a COCO captions file listing ``entries`` (id → captions)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, captions in entries.items():
        name = (files or {}).get(image_id, f"images/{image_id}.png")
        if name == f"images/{image_id}.png":
            Image.fromarray(np.full((16, 16, 3), 30 * image_id % 255, np.uint8)).save(root / name)
        images.append({"id": image_id, "file_name": name})
        annotations += [{"id": len(annotations) + 1, "image_id": image_id, "caption": c} for c in captions]
    path = root / f"captions_{len(list(root.glob('*.json')))}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_coco_captions_vocabulary_from_training_only(tmp_path):
    train = _coco_captions(tmp_path, {1: ["A red circle.", "a red ball"], 2: ["a blue square"]})
    val = _coco_captions(tmp_path, {3: ["a green zebra", "a zebra"]})
    data = CocoCaptionData(images=str(tmp_path), train_json=str(train), val_json=str(val), min_freq=1)
    data.preflight()
    splits = data.setup()
    assert set(splits.classes) == {"caption"}
    assert "zebra" not in splits.classes["caption"] and "red" in splits.classes["caption"]
    assert len(splits.train) == 3 and len(splits.val) == 1 and len(splits.test) == 1  # train: one per caption
    _, targets = splits.val.load(0)
    target = targets["caption"]
    assert target["tokens"][2:4] == [UNK, UNK]  # "green zebra" unseen in training
    assert target["references"] == [["a", "green", "zebra"], ["a", "zebra"]]  # metrics score the true words


@pytest.mark.parametrize("captions, message", [([], "image id 7 has no captions"),
                                               (["a cat", ""], "image id 7 has an empty or missing caption"),
                                               (["a cat", None], "image id 7 has an empty or missing caption"),
                                               ([" . "], None)])
def test_missing_or_empty_captions_name_the_image(tmp_path, captions, message):
    good = _coco_captions(tmp_path, {1: ["a dog"]})
    bad = _coco_captions(tmp_path, {1: ["a dog"], 7: captions})
    data = CocoCaptionData(images=str(tmp_path), train_json=str(bad), val_json=str(good))
    if message is None:  # punctuation alone is a caption of one token: allowed
        data.setup()
        return
    with pytest.raises(ZooError, match=message):
        data.setup()


def test_bad_image_entries_are_errors(tmp_path):
    good = _coco_captions(tmp_path, {1: ["a dog"]})
    missing = _coco_captions(tmp_path, {1: ["a dog"], 2: ["a cat"]}, files={2: "images/nope.png"})
    with pytest.raises(ZooError, match=r"data.train_json.*image id 2.*does not exist"):
        CocoCaptionData(images=str(tmp_path), train_json=str(missing), val_json=str(good)).setup()
    outside = _coco_captions(tmp_path, {1: ["a dog"], 2: ["a cat"]}, files={2: "../2.png"})
    with pytest.raises(ZooError, match="points outside"):
        CocoCaptionData(images=str(tmp_path), train_json=str(outside), val_json=str(good)).setup()
    with pytest.raises(ZooError, match="data.val_json"):
        CocoCaptionData(images=str(tmp_path), train_json=str(good), val_json=str(tmp_path / "none.json")).preflight()


def test_shapes_captions_adapter():
    splits = ShapesCaptionData(num_images=30, render_size=32).setup()
    vocabulary = splits.classes["caption"]
    assert vocabulary[:4] == ("<pad>", "<bos>", "<eos>", "<unk>") and "circle" in vocabulary
    assert len(splits.train) == 2 * (30 - len(splits.val) - len(splits.test))  # two captions per image
    image, targets = splits.test.load(0)
    assert image.shape == (32, 32, 3) and len(targets["caption"]["references"]) == 2


# ---------------------------------------------------------------- loss masking


def _batch(tokens: list[list[int]], width: int | None = None) -> CaptionBatch:
    width = width or max(map(len, tokens))
    padded = torch.zeros(len(tokens), width, dtype=torch.int64)
    for i, t in enumerate(tokens):
        padded[i, :len(t)] = torch.tensor(t)
    return CaptionBatch(padded, [[["x"]] for _ in tokens])


def test_padding_never_contributes_to_the_loss():
    loss = CaptionCrossEntropy().build()
    targets = _batch([[BOS, 5, 6, 7, EOS], [BOS, 8, EOS]])
    logits = torch.randn(2, 4, 12)
    base = loss({"logits": logits}, targets)["ce"]
    changed = logits.clone()
    changed[1, 2:] = 100 * torch.randn(2, 12)  # the positions whose target is <pad>
    assert torch.equal(loss({"logits": changed}, targets)["ce"], base)
    changed[1, 1] += 5 * torch.randn(12)  # a real position (target <eos>) does count
    assert not torch.allclose(loss({"logits": changed}, targets)["ce"], base)


@pytest.mark.parametrize("make", [
    lambda: LstmCaptionHead(in_channels=8, vocab_size=12, embed_dim=16, hidden=16, dropout=0.0),
    lambda: TransformerCaptionHead(in_channels=8, vocab_size=12, dim=16, heads=2, layers=1, ffn=32, dropout=0.0),
], ids=["lstm", "transformer"])
def test_extra_padding_leaves_the_heads_loss_unchanged(make):
    torch.manual_seed(0)
    head, loss = make().train(), CaptionCrossEntropy().build()
    features = [torch.randn(2, 8, 3, 3)]
    captions = [[BOS, 5, 6, 7, EOS], [BOS, 8, EOS]]
    tight = loss(head(features, None, _batch(captions)), _batch(captions))["ce"]
    wide = loss(head(features, None, _batch(captions, 9)), _batch(captions, 9))["ce"]
    torch.testing.assert_close(wide, tight)


# ---------------------------------------------------------------- decoding


def _heads():
    torch.manual_seed(1)
    yield LstmCaptionHead(in_channels=8, vocab_size=15, embed_dim=16, hidden=24, max_length=7).eval()
    yield TransformerCaptionHead(in_channels=8, vocab_size=15, dim=16, heads=2, layers=2, ffn=32, max_length=7).eval()


@pytest.mark.parametrize("head", list(_heads()), ids=["lstm", "transformer"])
def test_beam_one_equals_greedy(head):
    memory = head.encode([torch.randn(5, 8, 4, 4)])
    greedy = greedy_decode(head.step, memory, max_length=7)
    beam = beam_search(head.step, memory, beam_size=1, max_length=7)
    assert torch.equal(beam, greedy)


def _toy_step(memory, prefix):
    """A fixed "language model": after <bos>, word 4 looks best (0.6) but leads nowhere good; word 5 (0.4) is
    followed by <eos> for sure. Greedy takes 4 then a spread of words; beam search finds 5, <eos>."""
    batch, vocab = prefix.shape[0], 8
    probs = torch.full((batch, vocab), 1e-6)
    last = prefix[:, -1]
    probs[last == BOS, 4], probs[last == BOS, 5] = 0.6, 0.4
    probs[last == 4, 6:8] = 0.5
    probs[last == 5, EOS] = 1.0
    probs[(last == 6) | (last == 7), EOS] = 1.0
    return probs.log()


def test_beam_search_finds_the_more_likely_caption_and_is_batched():
    memory = (torch.zeros(3, 1),)
    greedy = greedy_decode(_toy_step, memory, max_length=5)
    beam = beam_search(_toy_step, memory, beam_size=2, max_length=5)
    assert greedy[0].tolist()[:3] == [4, 6, EOS]  # 0.6 * 0.5 = 0.30
    assert beam[0].tolist()[:2] == [5, EOS]  # 0.4 * 1.0 = 0.40
    assert torch.equal(beam, beam[:1].expand(3, -1))  # every image of the batch decoded alike


def test_length_penalty_prefers_longer_captions():
    def step(memory, prefix):  # <eos> now (0.5) or two more words at 0.45 * 0.9 each
        probs = torch.full((prefix.shape[0], 6), 1e-6)
        last, t = prefix[:, -1], prefix.shape[1]
        probs[last == BOS, EOS], probs[last == BOS, 4] = 0.5, 0.45
        probs[(last == 4) & (t < 3), 4] = 0.9
        probs[(last == 4) & (t >= 3), EOS] = 0.9
        return probs.log()

    memory = (torch.zeros(1, 1),)
    assert beam_search(step, memory, beam_size=2, max_length=6)[0, 0] == EOS
    assert beam_search(step, memory, beam_size=2, max_length=6, length_penalty=1.0)[0].tolist()[:3] == [4, 4, EOS]


# ---------------------------------------------------------------- metrics

CANDIDATES = [["a", "small", "red", "circle", "in", "the", "top", "left"],
              ["there", "is", "a", "large", "blue", "square", "on", "the", "right"],
              ["a", "green", "triangle", "at", "the", "bottom"]]
REFERENCES = [[["a", "small", "red", "circle", "in", "the", "top", "left"],
               ["there", "is", "a", "small", "red", "circle", "in", "the", "top", "left"]],
              [["a", "large", "blue", "square", "on", "the", "left"],
               ["there", "is", "a", "large", "blue", "square", "on", "the", "left"]],
              [["a", "small", "green", "triangle", "at", "the", "bottom", "right"],
               ["there", "is", "a", "green", "triangle", "at", "the", "bottom"]]]


def test_bleu_agrees_with_nltk_corpus_bleu():
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    ours = corpus_bleu(CANDIDATES, REFERENCES)
    for n in range(1, 5):
        theirs = nltk_bleu.corpus_bleu(REFERENCES, CANDIDATES, weights=(1 / n,) * n)
        assert ours[n - 1] == pytest.approx(theirs, rel=1e-6)
    short = corpus_bleu([["a", "red", "circle"]], [[["a", "red", "circle", "on", "the", "left"]]])
    theirs = nltk_bleu.corpus_bleu([[["a", "red", "circle", "on", "the", "left"]]], [["a", "red", "circle"]],
                                   weights=(0.5, 0.5))
    assert short[1] == pytest.approx(theirs, rel=1e-6) and short[1] < 0.5  # brevity penalty applied


def test_cider_d_equals_hand_computed_values():
    # Two images (log N = ln 2). Document frequencies: "a" 2, every other n-gram 1 (idf ln 2), unseen n-grams idf ln 2.
    candidates = [["a", "b", "b"], ["c", "a"]]
    references = [[["a", "b"]], [["a", "c"]]]
    # Image 1: unigrams clipped (b: min(2, 1) ln2 * ln2 / (2 ln2 * ln2) = 0.5), bigrams {ab, bb} vs {ab}: 1/sqrt(2);
    # length (bigram count) 2 vs 1 → exp(-1 / 72).  Image 2: unigram c matches (1), bigram "c a" ≠ "a c" (0).
    first = 10 * (0.5 + 1 / math.sqrt(2)) * math.exp(-1 / 72) / 4
    second = 10 * 1.0 / 4
    assert cider_d(candidates, references) == pytest.approx((first + second) / 2, rel=1e-9)
    # Several references: the mean over them. Now "a", "c", "a c" are in both documents (idf 0): image 1 matches
    # its first reference fully (1 + 1 for n = 1, 2) and nothing of its second; image 2 has no weighted n-gram left.
    assert cider_d([["a", "b"], ["a", "c"]], [[["a", "b"], ["a", "c"]], [["a", "c"]]]) == pytest.approx(
        (10 * (2 + 0) / 4 / 2 + 0.0) / 2)


def test_caption_metrics_module_scores_decoded_tokens():
    vocab = ("<pad>", "<bos>", "<eos>", "<unk>", "a", "red", "circle", "blue")
    metrics = CaptionMetrics(vocab, lambda out: out["tokens"])  # tokens fed directly, no decoding head
    refs = [[["a", "red", "circle"]], [["a", "blue", "circle"]]]
    metrics.update({"tokens": torch.tensor([[4, 5, 6, EOS, PAD], [4, 7, 6, EOS, PAD]])}, CaptionBatch(
        torch.zeros(2, 1, dtype=torch.int64), refs))
    perfect = metrics.compute()
    assert perfect["bleu1"] == pytest.approx(1.0) and perfect["cider"] > 0
    metrics.reset()
    metrics.update({"tokens": torch.tensor([[4, 7, 6, EOS], [4, 5, 6, EOS]])}, CaptionBatch(
        torch.zeros(2, 1, dtype=torch.int64), refs))
    assert metrics.compute()["cider"] < perfect["cider"]


def test_collate_pads_and_draw_writes_the_caption_beneath():
    values = [{"tokens": [BOS, 4, EOS], "references": [["a"]]}, {"tokens": [BOS, 4, 5, 6, EOS], "references": [["b"]]}]
    images, targets = collate_samples([(torch.zeros(3, 8, 8), {"caption": v}) for v in values])
    batch = targets["caption"].value
    assert isinstance(batch, CaptionBatch) and targets["caption"].index.tolist() == [0, 1]
    assert images.shape == (2, 3, 8, 8) and batch.tokens.tolist()[0] == [BOS, 4, EOS, PAD, PAD]
    assert batch[1:].references == [[["b"]]] and batch[0] == [["a"]]
    alone = collate_captions(values)  # the caption kind's own collation, without images
    assert torch.equal(alone.tokens, batch.tokens) and alone.references == batch.references
    image = np.zeros((32, 32, 3), np.uint8)
    alone = draw_caption(image, {"caption": "a red circle"}, None, ())
    both = draw_caption(image, {"caption": "a red circle"}, [["a", "blue", "square"]], ())
    assert alone.shape[0] > 160 and both.shape[0] > alone.shape[0]  # upscaled, text lines beneath


def test_head_specs_read_channels_and_validate():
    info = [FeatureInfo(channels=16, stride=8, module="a"), FeatureInfo(channels=32, stride=16, module="b")]
    assert TransformerCaptioner(level=-2, dim=16, heads=2).build(info, num_classes=20).project[0].in_channels == 16
    assert LstmCaptioner(embed_dim=8, hidden=8).build(info, num_classes=20).image[0].in_features == 32
    with pytest.raises(RecipeError, match="^level: 2") as error:  # built directly: the bare field
        TransformerCaptioner(level=2).build(info, num_classes=20)
    assert error.value.path == "level"
    with pytest.raises(RecipeError, match="^dim: 10") as error:
        TransformerCaptioner(dim=10, heads=4)
    assert error.value.path == "dim"
    # inside a recipe, the engine and the overrides prefix the head's path
    from zoo.engine.run import check_model

    recipe = Recipe(name="bad_caption", data=ShapesCaptionData(image_size=32),
                    model=BackboneSpec(name="resnet10t") | TransformerCaptioner(level=9, dim=16, heads=2),
                    loss=CaptionCrossEntropy())
    with pytest.raises(ZooError, match="model.head.level"):
        check_model(recipe)
    with pytest.raises(ZooError, match="model.head.dim"):
        recipe.override(**{"model.head.dim": 10, "model.head.heads": 4})


# ---------------------------------------------------------------- engine: train, eval both ways, predict


def test_train_eval_greedy_and_beam_predict(tmp_path):
    from zoo.cli import main
    from zoo.engine import evaluate, load_module, predict, train

    recipe = Recipe(
        name="tiny_caption",
        data=ShapesCaptionData(num_images=30, render_size=32, image_size=32, batch_size=8, num_workers=0),
        model=BackboneSpec(name="resnet10t") | TransformerCaptioner(dim=32, heads=2, layers=1, ffn=64, max_length=6,
                                                                   beam_size=2),
        loss=CaptionCrossEntropy(),
        optim=Optim(name="adamw", lr=1e-3),
        trainer=Trainer(max_epochs=1, accelerator="cpu", devices=1, limit_train_batches=2, limit_val_batches=1),
    )
    metrics = train(recipe, tmp_path / "run")
    assert set(metrics) >= {"bleu1", "bleu4", "cider"}
    ckpt = tmp_path / "run" / "best.ckpt"
    assert json.loads((tmp_path / "run" / "data.json").read_text())["classes"]["caption"][:2] == ["<pad>", "<bos>"]
    assert (tmp_path / "run" / "predictions_test.png").is_file()
    greedy = evaluate(ckpt, split="val", overrides={"model.head.beam_size": 1})
    assert set(greedy) == set(metrics)
    assert main(["eval", str(ckpt), "model.head.beam_size=1", "--split", "val", "--json",
                 str(tmp_path / "g.json")]) == 0
    assert json.loads((tmp_path / "g.json").read_text()) == pytest.approx(greedy)
    assert main(["eval", str(ckpt), "model.head.beam_sise=1"]) == 2  # overrides are checked like a recipe's
    head = load_module(ckpt, {"model.head.max_length": 1}).model.head  # the override reaches the decoder
    features = [torch.randn(2, head.project[0].in_channels, 2, 2)]  # level -1: the last map
    assert head.max_length == 1 and head.decode(head(features, None)).shape[1] == 1

    image = tmp_path / "one.png"
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(image)
    results = predict(ckpt, [image], out=tmp_path / "pred")
    assert list(results[0]) == ["image", "caption"] and isinstance(results[0]["caption"], str)
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text()) == results
    assert len(list((tmp_path / "pred" / "images").glob("*.png"))) == 1


def test_duplicate_image_id_in_a_captions_file_is_an_error(tmp_path):
    """A second entry with the same id would silently take the first image's captions."""
    good = _coco_captions(tmp_path, {1: ["a dog"]})
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "images" / "other.png")
    bad = tmp_path / "dup.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "images/1.png"},
                                          {"id": 1, "file_name": "images/other.png"}],
                               "annotations": [{"id": 1, "image_id": 1, "caption": "a dog"}]}))
    with pytest.raises(ZooError, match=r"dup\.json: image id 1 appears twice.*'images/1.png'.*'images/other.png'"):
        CocoCaptionData(images=str(tmp_path), train_json=str(bad), val_json=str(good)).setup()


def test_long_captions_are_truncated_to_max_words_with_a_counted_warning(tmp_path):
    huge = " ".join(["dog"] * 10_000)
    train = _coco_captions(tmp_path, {1: [huge, "a red ball"], 2: ["a blue square", huge]})
    val = _coco_captions(tmp_path, {3: ["a cat"]})
    data = CocoCaptionData(images=str(tmp_path), train_json=str(train), val_json=str(val), min_freq=1, max_words=12)
    with pytest.warns(UserWarning, match=r"truncated 2 caption\(s\) longer than data\.max_words=12 tokens "
                                         r"\(longest: 10000 tokens\)"):
        splits = data.setup()
    lengths = sorted(len(splits.train.load(i)[1]["caption"]["tokens"]) for i in range(len(splits.train)))
    assert lengths == [5, 5, 14, 14]  # <bos> + words + <eos>: the short captions are untouched
    assert CocoCaptionData(images=str(tmp_path), train_json=str(train), val_json=str(val)).max_words == 64
