"""Matched directions: how much scene information a weakened input still carries.

A linear probe (ridge regression on one-hot targets, closed form) recovers the scene's
attributes from the input as the student sees it: for each of the five places, the colour of
the object there and its shape (or "none"). Captions are read as bags of words, images as
pixels (2x2-pooled). Both the probe's training and test data are weakened the same way.

The measure is the share of the balanced input's above-chance accuracy that survives:
``retained = (accuracy - chance) / (accuracy at strength 0 - chance)``, chance being the
majority class of each target. Two directions remove comparable information when their
retained shares are equal; `choose_strengths` picks the study's strengths so.

    python -m experiments.imbalance.probe [--strengths 0.25 0.5 0.75 1] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.imbalance.design import Design

PROBE_SEED = 200  # the probe's own generated data: no study pair and no tuning run uses it
PROBE_DATA = ("data.num_train=600", "data.num_val=20", "data.num_test=300", "data.reference_images=0")
RIDGE = 1.0  # ridge penalty per training item, on standardised features


def scene_targets(objects: list[dict]) -> list[int]:
    """Per place (the generator's POSITIONS): the colour there and the shape there, 0 = none."""
    from vlr.data.synthetic import COLOURS, POSITIONS, SHAPES

    at = {o["position"]: o for o in objects}
    colours, shapes = [], []
    for place in POSITIONS:
        obj = at.get(place)
        colours.append(0 if obj is None else 1 + list(COLOURS).index(obj["colour"]))
        shapes.append(0 if obj is None else 1 + SHAPES.index(obj["shape"]))
    return colours + shapes


def ridge_accuracy(x_train, y_train, x_test, y_test, penalty: float = RIDGE) -> float:
    """Mean accuracy over targets of one-vs-rest ridge classifiers (standardised features)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    a, b = np.hstack([a, np.ones((len(a), 1))]), np.hstack([b, np.ones((len(b), 1))])
    gram = a.T @ a + penalty * len(a) * np.eye(a.shape[1])
    accuracies = []
    for t in range(y_train.shape[1]):
        classes = np.unique(np.concatenate([y_train[:, t], y_test[:, t]]))
        onehot = (y_train[:, t, None] == classes[None]).astype(np.float64)
        weights = np.linalg.solve(gram, a.T @ onehot)
        predicted = classes[np.argmax(b @ weights, axis=1)]
        accuracies.append(float(np.mean(predicted == y_test[:, t])))
    return float(np.mean(accuracies))


def majority_accuracy(y_train, y_test) -> float:
    """Chance: each target's most frequent training class, scored on the test items."""
    out = []
    for t in range(y_train.shape[1]):
        values, counts = np.unique(y_train[:, t], return_counts=True)
        out.append(float(np.mean(y_test[:, t] == values[np.argmax(counts)])))
    return float(np.mean(out))


def bag_of_words(captions: list[str], vocab: dict[str, int]) -> np.ndarray:
    out = np.zeros((len(captions), len(vocab)))
    for i, caption in enumerate(captions):
        for word in caption.lower().replace(",", " ").replace(":", " ").split():
            if word in vocab:
                out[i, vocab[word]] += 1.0
    return out


def pixels(split, degrader) -> np.ndarray:
    """The split's images as the student gets them (after the degrader), 2x2 average-pooled."""
    from PIL import Image

    rows = []
    for index, path in enumerate(split.image_paths):
        with Image.open(path) as img:
            img = img.convert("RGB")
            if degrader is not None:
                img = degrader(img, index)
            x = np.asarray(img, dtype=np.float64) / 255.0
        h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
        x = x[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
        rows.append(x.reshape(-1))
    return np.stack(rows)


def _datamodule(overrides: list[str]):
    import tempfile

    import hydra

    from experiments.imbalance.reference_alone import compose_config

    with tempfile.TemporaryDirectory() as scratch:
        cfg = compose_config(overrides, scratch)
    imbalance = hydra.utils.instantiate(cfg.imbalance, _convert_="all")
    datamodule = hydra.utils.instantiate(
        cfg.data, imbalance=imbalance, tokenizer=None, max_length=8, tower_data_config=None, _convert_="all"
    )
    datamodule.prepare_data()
    return datamodule, imbalance


def _targets(datamodule, split) -> np.ndarray:
    root = Path(datamodule.source.root)
    entries = json.loads(next(root.glob("dataset_*.json")).read_text())["images"]
    by_name = {e["filename"]: e["objects"] for e in entries}
    return np.array([scene_targets(by_name[Path(p).name]) for p in split.image_paths])


def probe_accuracy(direction: str, strength: float, base: list[str]) -> dict[str, float]:
    """The probe's accuracy on the modality ``direction`` weakens, at ``strength``, and chance."""
    overrides = [*base, *PROBE_DATA, f"data.generator_seed={PROBE_SEED}", f"imbalance={direction}"]
    overrides += [f"imbalance.strength={strength:g}", "imbalance.apply_to_eval=true"]
    datamodule, imbalance = _datamodule(overrides)
    train, test = datamodule.split("train"), datamodule.split("test")
    y_train, y_test = _targets(datamodule, train), _targets(datamodule, test)
    if direction.startswith("text"):
        clean = datamodule.source.read("train").captions
        words = sorted({w for c in clean for w in c.lower().replace(",", " ").replace(":", " ").split()})
        vocab = {w: i for i, w in enumerate(words)}
        x_train, x_test = bag_of_words(train.captions, vocab), bag_of_words(test.captions, vocab)
        y_train, y_test = y_train[train.text_to_image.numpy()], y_test[test.text_to_image.numpy()]
    else:
        x_train = pixels(train, imbalance.image_degrader("train"))
        x_test = pixels(test, imbalance.image_degrader("test"))
    return {
        "accuracy": 100 * ridge_accuracy(x_train, y_train, x_test, y_test),
        "chance": 100 * majority_accuracy(y_train, y_test),
    }


def measure(directions, strengths, base: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Per direction and strength (0 included): accuracy, chance and the retained share (%)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for direction in directions:
        rows = {f"{s:g}": probe_accuracy(direction, s, base) for s in sorted({0.0, *strengths})}
        balanced = rows["0"]
        for row in rows.values():
            span = balanced["accuracy"] - balanced["chance"]
            row["retained"] = 100 * (row["accuracy"] - row["chance"]) / span if span > 0 else float("nan")
        out[direction] = rows
    return out


def choose_strengths(table: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """Each direction's strength, so that both keep the same share of the scene information:
    the target is the least information the *milder* direction reaches at its strongest
    (the largest of the directions' minimal retained shares); every direction then takes the
    grid strength whose retained share is closest to it (ties: the weaker strength)."""
    grids = {d: {float(s): r["retained"] for s, r in rows.items() if float(s) > 0} for d, rows in table.items()}
    target = max(min(g.values()) for g in grids.values())
    return {d: min(g, key=lambda s: (abs(g[s] - target), s)) for d, g in grids.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directions", nargs="+", default=["text_weak", "image_weak"])
    parser.add_argument("--strengths", nargs="+", type=float, default=list(Design().probe_strengths))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", default=["experiment=imbalance_study"])
    args = parser.parse_args(argv)
    table = measure(args.directions, args.strengths, args.overrides)
    result = {"probe": table, "chosen": choose_strengths(table)}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
