"""Caption metrics the COCO caption way: corpus BLEU-1..4 and CIDEr-D over all reference captions per image.

Both follow the reference implementation (``pycocoevalcap``: ``bleu_scorer.py`` with the "closest" reference
length, ``cider_scorer.py``); captions are lists of word tokens, already tokenized.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

__all__ = ["ngrams", "corpus_bleu", "cider_d"]

Tokens = Sequence[str]


def ngrams(words: Tokens, n: int) -> Counter:
    """Counts of every 1..n-gram (tuples) of ``words``."""
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def corpus_bleu(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], *, max_n: int = 4) -> list[float]:
    """``[BLEU-1, ..., BLEU-max_n]`` of a corpus: clipped n-gram counts summed over all candidates, one brevity
    penalty from the summed candidate length and the summed closest reference lengths (ties: the shorter one).

    Args:
        candidates: one generated caption per image.
        references: every reference caption of each image (at least one each).
    """
    if len(candidates) != len(references):
        raise ValueError(f"corpus_bleu: {len(candidates)} candidates but {len(references)} reference lists")
    matched, total = [0] * max_n, [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references):
        counts = ngrams(cand, max_n)
        best: Counter = Counter()
        for ref in refs:
            best |= ngrams(ref, max_n)  # per n-gram: the most any one reference has (the clip)
        for gram, count in counts.items():
            matched[len(gram) - 1] += min(count, best[gram])
        for k in range(max_n):
            total[k] += max(0, len(cand) - k)
        cand_len += len(cand)
        ref_len += min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    # pycocoevalcap's tiny/small constants keep the log finite when a precision is 0.
    logs = [math.log((m + 1e-15) / (t + 1e-9)) for m, t in zip(matched, total)]
    brevity = 1.0 if cand_len >= ref_len else math.exp(1 - ref_len / max(cand_len, 1e-9))
    return [brevity * math.exp(sum(logs[:n]) / n) for n in range(1, max_n + 1)]


def _tfidf(counts: Counter, df: Counter, log_docs: float, max_n: int) -> tuple[list[dict], list[float], int]:
    """Per-n tf-idf vectors, their norms, and the length (bigram count, as the reference code has it)."""
    vec: list[dict] = [{} for _ in range(max_n)]
    norm = [0.0] * max_n
    for gram, tf in counts.items():
        n = len(gram) - 1
        vec[n][gram] = tf * (log_docs - math.log(max(1.0, df[gram])))
        norm[n] += vec[n][gram] ** 2
    length = sum(tf for gram, tf in counts.items() if len(gram) == 2)
    return vec, [math.sqrt(x) for x in norm], length


def cider_d(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], *, max_n: int = 4,
            sigma: float = 6.0) -> float:
    """Corpus CIDEr-D: mean over images of ``10 ×`` the mean (over references and n = 1..max_n) of the clipped
    cosine similarity of tf-idf n-gram vectors, times a gaussian penalty on the length difference.

    Document frequencies come from the references of this corpus (one document per image).
    """
    if len(candidates) != len(references):
        raise ValueError(f"cider_d: {len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        return 0.0
    ref_counts = [[ngrams(r, max_n) for r in refs] for refs in references]
    df: Counter = Counter()
    for counts in ref_counts:
        df.update(set().union(*counts))
    log_docs = math.log(len(candidates))
    total = 0.0
    for cand, refs in zip(candidates, ref_counts):
        vc, nc, lc = _tfidf(ngrams(cand, max_n), df, log_docs, max_n)
        score = 0.0
        for counts in refs:
            vr, nr, lr = _tfidf(counts, df, log_docs, max_n)
            penalty = math.exp(-((lc - lr) ** 2) / (2 * sigma ** 2))
            for n in range(max_n):
                dot = sum(min(v, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, v in vc[n].items())
                if nc[n] and nr[n]:
                    dot /= nc[n] * nr[n]
                score += dot * penalty
        total += 10.0 * score / max_n / len(refs)
    return total / len(candidates)
