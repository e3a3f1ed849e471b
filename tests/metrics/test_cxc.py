"""`relevance=cxc`: CxC's files read as they are, rho against scipy, CxC recall against brute force."""

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from vlr.errors import ConfigError
from vlr.metrics.relevance.cxc import CxCRatings, caption_rho, rated_caption_pairs, read_cxc, spearman
from vlr.metrics.relevance.rouge_l import rouge_l_pairs

IMAGES = [101, 102, 103, 104]  # COCO image ids of the split, in split order
T2I = [0, 0, 1, 1, 2, 3, 3]  # caption -> image
CAPTION_IDS = [11, 12, 21, 22, 31, 41, 42]  # COCO annotation ids, in split order


def _write(tmp_path, split="test"):
    name = lambda i: f"COCO_val2014_{i:012d}.jpg"  # noqa: E731
    cap = lambda c: f"COCO_val2014:sentid:{c}"  # noqa: E731
    rows = {
        "sts": ("caption1,caption2", [(11, 21, 4.0), (12, 31, 1.0), (22, 41, 3.0), (21, 42, 2.5), (11, 999, 5.0)]),
        "sis": ("image1,image2", [(101, 103, 2.6), (102, 104, 1.0), (101, 104, 3.5), (103, 555, 4.0)]),
        "sits": ("caption,image", [(11, 102, 3.2), (31, 101, 0.5), (41, 103, 4.5), (22, 104, 2.0), (42, 101, 3.0)]),
    }
    for task, (header, data) in rows.items():
        fmt = (
            (lambda a, b: (cap(a), cap(b)))
            if task == "sts"
            else ((lambda a, b: (name(a), name(b))) if task == "sis" else (lambda a, b: (cap(a), name(b))))
        )
        lines = [f"{header},agg_score,sampling_method"] + [",".join([*fmt(a, b), str(s), "x"]) for a, b, s in data]
        (tmp_path / f"{task}_{split}.csv").write_text("\n".join(lines) + "\n")
    return rows


def _ratings(tmp_path):
    _write(tmp_path)
    targets = {
        "image_names": [f"COCO_val2014_{i:012d}.jpg" for i in IMAGES],
        "caption_ids": CAPTION_IDS,
        "text_to_image": torch.tensor(T2I),
    }
    return CxCRatings.for_split({"root": str(tmp_path)}, "test", targets)


def test_rated_pairs_outside_the_split_are_dropped_and_rho_is_spearmans(tmp_path):
    ratings = _ratings(tmp_path)
    assert ratings.matched == {"sts": (4, 5), "sis": (3, 4), "sits": (5, 5)}
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(4, 5, generator=g), torch.randn(7, 5, generator=g)
    got = ratings.spearman(img, txt)
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    for task, names, a, b in (
        ("sts", ["t2t"], txt, txt),
        ("sis", ["i2i"], img, img),
        ("sits", ["i2t", "t2i"], txt, img),
    ):
        p = ratings.pairs[task]
        cos = (unit(a)[p[:, 0]] * unit(b)[p[:, 1]]).sum(1).numpy()
        want = spearmanr(cos, ratings.scores[task].numpy()).statistic
        for name in names:
            assert got[f"{name}/cxc_spearman"] == pytest.approx(want, abs=1e-9)
    x = np.array([1.0, 2, 2, 3, 5, 5, 5])
    assert spearman(x, np.array([3.0, 1, 2, 2, 9, 4, 4])) == pytest.approx(
        spearmanr(x, [3, 1, 2, 2, 9, 4, 4]).statistic
    )


def _brute_recall(scores, positives, k, exclude_self):
    hits = []
    for q in range(scores.shape[0]):
        pos = set(np.flatnonzero(positives[q])) - ({q} if exclude_self else set())
        if not pos:
            continue
        order = [j for j in np.argsort(-scores[q], kind="stable") if not (exclude_self and j == q)]
        hits.append(min(order.index(j) for j in pos) < k)
    return 100.0 * np.mean(hits)


def test_cxc_recall_counts_coco_pairs_and_rated_pairs_above_the_threshold(tmp_path):
    ratings = _ratings(tmp_path)
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    got = ratings.recall(img.float(), txt.float(), ks=(1, 2))
    t2i = np.array(T2I)
    at_c = {c: k for k, c in enumerate(CAPTION_IDS)}
    at_i = {i: k for k, i in enumerate(IMAGES)}
    t2t = t2i[:, None] == t2i[None, :]
    i2i = np.zeros((4, 4), bool)
    t2i_pos = t2i[:, None] == np.arange(4)[None, :]
    for a, b in [(11, 21), (22, 41)]:  # STS >= 3 (the pair with 999 is outside the split)
        t2t[at_c[a], at_c[b]] = t2t[at_c[b], at_c[a]] = True
    for a, b in [(101, 103), (101, 104)]:  # SIS >= 2.5
        i2i[at_i[a], at_i[b]] = i2i[at_i[b], at_i[a]] = True
    for c, i in [(11, 102), (41, 103), (42, 101)]:  # SITS >= 3
        t2i_pos[at_c[c], at_i[i]] = True
    for name, pos in (("t2t", t2t), ("i2i", i2i), ("i2t", t2i_pos.T), ("t2i", t2i_pos)):
        scores = {"t2t": txt @ txt.T, "i2i": img @ img.T, "i2t": img @ txt.T, "t2i": txt @ img.T}[name].numpy()
        for k in (1, 2):
            expected = _brute_recall(scores, pos, k, name in ("t2t", "i2i"))
            assert got[f"{name}/cxc_R@{k}"] == pytest.approx(expected), (name, k)
    assert {k.split("/")[0] for k in got} == {"t2t", "i2i", "i2t", "t2i"}


def test_missing_files_and_foreign_data_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="sts_val.csv is missing"):
        read_cxc(tmp_path, "val")
    _write(tmp_path)
    targets = {"image_names": ["000000000007.jpg"], "caption_ids": [1], "text_to_image": torch.tensor([0])}
    with pytest.raises(ConfigError, match="none of CxC's test pairs"):
        CxCRatings.for_split({"root": str(tmp_path)}, "test", targets)


def test_caption_only_mode_correlates_each_scorer_with_people(tmp_path):
    _write(tmp_path, "val")
    _write(tmp_path, "test")
    captions = {
        11: "a red bus on a street",
        12: "a bus parked",
        21: "a red bus driving down the street",
        22: "a cat on a sofa",
        31: "two dogs in a park",
        41: "a cat sleeping on a couch",
        42: "a sleeping cat",
    }
    annotations = [{"id": c, "image_id": 1000 + c // 10, "caption": t} for c, t in captions.items()]
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [], "annotations": annotations}))
    pairs = rated_caption_pairs(path, tmp_path)
    assert len(pairs["score"]) == 8 and pairs["total"] == 10  # the pairs naming caption 999 are left out
    rho = caption_rho(pairs, {"rouge_l": rouge_l_pairs})
    want = spearmanr(rouge_l_pairs(pairs["a"], pairs["b"]), pairs["score"]).statistic
    assert rho["rouge_l"] == pytest.approx(want)


def test_the_caption_only_command_reports_rho_per_scorer(tmp_path):
    """``python -m vlr.cxc_captions`` in-process: ROUGE-L's rho as scipy computes it, and the
    n-gram text reference fitted on captions of images with no rated caption."""
    from vlr.cxc_captions import main

    _write(tmp_path, "val")
    _write(tmp_path, "test")
    rated = {
        11: "a red bus on a street",
        12: "a bus parked",
        21: "a red bus driving down the street",
        22: "a cat on a sofa",
        31: "two dogs in a park",
        41: "a cat sleeping on a couch",
        42: "a sleeping cat",
    }
    spare = {500 + k: text for k, text in enumerate(["a red bus", "a bus on a street", "a cat on a couch", "a cat"])}
    annotations = [{"id": c, "image_id": 1000 + c // 10, "caption": t} for c, t in {**rated, **spare}.items()]
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [], "annotations": annotations}))
    out = main(["--captions", str(path), "--cxc", str(tmp_path), "--epochs", "2", "--only", "rouge_l", "learned_ngram"])
    pairs = rated_caption_pairs(path, tmp_path)
    want = spearmanr(rouge_l_pairs(pairs["a"], pairs["b"]), pairs["score"]).statistic
    assert out["pairs"] == 8 and out["fit_images"] == 1  # image 1050: the only one without a rated caption
    assert out["spearman"]["rouge_l"] == pytest.approx(want)
    assert -1.0 <= out["spearman"]["learned_ngram"] <= 1.0 and set(out["spearman"]) == {"rouge_l", "learned_ngram"}


def test_relevance_cxc_builds_an_evaluator_that_reports_people_and_rouge_l(tmp_path):
    """``relevance=cxc``: the evaluator logs CxC's rho and recall over the whole split, and grades
    NDCG with its ``also`` (ROUGE-L); evaluation.json's description names the thresholds."""
    from vlr.metrics import build_evaluator

    _write(tmp_path)
    targets = {
        "image_names": [f"COCO_val2014_{i:012d}.jpg" for i in IMAGES],
        "caption_ids": CAPTION_IDS,
        "text_to_image": torch.tensor(T2I),
        "captions": ["a red bus", "a bus", "a red car", "a cat", "two dogs", "a cat sleeping", "a cat"],
        "num_images": 4,
        "cache_dir": str(tmp_path / "rouge"),
    }
    cfg = {
        "name": "cxc",
        "root": str(tmp_path),
        "also": ["rouge_l"],
        "thresholds": {"sts": 3.0, "sis": 2.5, "sits": 3.0},
    }
    ev = build_evaluator(targets, cfg, split="test", ks=(1, 5, 10), ndcg_ks=(5,), overlap_ks=(), ties="expected")
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(4, 6, generator=g), torch.randn(7, 6, generator=g)
    ev.update(image_emb=img, image_idx=torch.arange(4))
    ev.update(text_emb=txt, text_idx=torch.arange(7))
    out = ev.compute()
    assert ev.primary_relevance == "rouge_l" and "t2t/rouge_l_NDCG@5" in out
    want = CxCRatings.for_split(cfg, "test", targets).metrics(img, txt, (1, 5, 10))
    assert {k: out[k] for k in want} == pytest.approx(want)
    assert {"t2t/cxc_spearman", "i2i/cxc_R@1", "t2i/cxc_R@10"} <= set(out)
    assert ev.cxc.describe()["pairs_in_split"] == {"sts": 4, "sis": 3, "sits": 5}


def _tiny_sentence_encoder(directory):
    """A random 1-layer BERT with a WordPiece vocabulary, saved as sentence-transformers ships
    one (config, model.safetensors, tokenizer files): a local stand-in for all-MiniLM-L6-v2."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = "a red bus on street parked driving down the cat sofa two dogs in park sleeping couch".split()
    (directory / "vocab.txt").parent.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = BertConfig(vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
        config.intermediate_size = 32
        BertModel(config).save_pretrained(directory, safe_serialization=True)


def test_the_caption_only_command_scores_the_tiny_tower_and_a_local_sentence_encoder(tmp_path):
    """The optional ceiling read from a local directory (its weights' SHA-256 reported) and the
    frozen-initial tiny tower; rho of the encoder against an independent mean-pooled cosine."""
    import hashlib

    from transformers import AutoModel, AutoTokenizer

    from vlr.cxc_captions import main

    _write(tmp_path, "val")
    _write(tmp_path, "test")
    rated = {11: "a red bus on a street", 12: "a bus parked", 21: "a red bus driving down the street"}
    rated |= {22: "a cat on a sofa", 31: "two dogs in a park", 41: "a cat sleeping on a couch", 42: "a sleeping cat"}
    spare = {500 + k: text for k, text in enumerate(["a red bus", "a bus on a street", "a cat on a couch", "a cat"])}
    annotations = [{"id": c, "image_id": 1000 + c // 10, "caption": t} for c, t in {**rated, **spare}.items()]
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [], "annotations": annotations}))
    encoder = tmp_path / "minilm"
    _tiny_sentence_encoder(encoder)
    before = torch.random.get_rng_state()
    args = ["--captions", str(path), "--cxc", str(tmp_path), "--sentence-encoder", str(encoder)]
    out = main([*args, "--only", "frozen_init_tiny", "sentence_encoder"])
    assert torch.equal(torch.random.get_rng_state(), before)  # the tiny tower's weights: a private RNG
    assert set(out["spearman"]) == {"frozen_init_tiny", "sentence_encoder"}
    weights = (encoder / "model.safetensors").read_bytes()
    assert out["sentence_encoder_sha256"] == hashlib.sha256(weights).hexdigest()

    pairs = rated_caption_pairs(path, tmp_path)
    tokenizer, model = AutoTokenizer.from_pretrained(encoder), AutoModel.from_pretrained(encoder).eval()

    def pooled(texts):
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return (hidden * mask).sum(1) / mask.sum(1)

    cosine = torch.nn.functional.cosine_similarity(pooled(pairs["a"]), pooled(pairs["b"])).numpy()
    assert out["spearman"]["sentence_encoder"] == pytest.approx(spearmanr(cosine, pairs["score"]).statistic)
    again = main([*args, "--only", "frozen_init_tiny"])  # the same seed: the same tower, the same rho
    assert again["spearman"]["frozen_init_tiny"] == out["spearman"]["frozen_init_tiny"]
    assert -1.0 <= out["spearman"]["frozen_init_tiny"] <= 1.0
