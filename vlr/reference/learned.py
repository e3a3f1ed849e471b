"""``reference=learned``: intra-modal references learned from data, not given by the generator.

The oracle reference (`vlr.data.synthetic_oracle`) is built from the scene's labels and the
clean captions, so it hands the methods information the evaluation also uses and the weak
modality no longer has. This one learns both encoders from a disjoint set of generated data
(``<data.root>/reference_corpus``: images and captions from seeds no split uses, without
labels), once per dataset, and embeds exactly what the student sees:

- image: a small CNN trained self-supervised (SimCLR: two random crops of an image, with
  noise and blur, are pulled together against the other images of the batch; no flips,
  since left/right is content here, and no colour changes, since colour is). It embeds the
  batch's images, after any image imbalance, in the transform the towers get;
- text: a bag of word unigrams and bigrams, trained contrastively on pairs of captions of
  the same corpus image (paraphrases), so it learns which phrasings mean the same scene.
  It embeds the split's captions as the run has them, after any text imbalance.

Fitted single-threaded (bit-identical whatever the run's thread count) under a file lock,
and cached in ``<data.root>/learned_reference/<key>/`` (safetensors + JSON), where ``key``
hashes the fit's settings and the corpus, so the encoders are versioned with the data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlr.errors import ConfigError

log = logging.getLogger(__name__)
CORPUS = "reference_corpus"
# the image transform of the towers (vlr's builtin one: ImageNet mean and std)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ConvEncoder(nn.Module):
    """Four stride-2 3x3 convolutions (32-64-128-128 channels, BatchNorm, ReLU), global average
    pooling and a linear map to ``dim``."""

    def __init__(self, dim: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in ((3, 32), (32, 64), (64, 128), (128, 128)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(128, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(images).mean(dim=(2, 3)))


class NGramEncoder(nn.Module):
    """Mean of learned unigram and bigram embeddings (``vocab``: n-gram -> row)."""

    def __init__(self, vocab: dict[str, int], dim: int = 64):
        super().__init__()
        self.vocab = dict(vocab)
        self.embedding = nn.EmbeddingBag(len(vocab) + 1, dim, mode="mean", padding_idx=len(vocab))

    def ids(self, caption: str) -> list[int]:
        grams = ngrams(caption)
        return [self.vocab[g] for g in grams if g in self.vocab] or [len(self.vocab)]  # nothing known: padding

    def forward(self, captions: list[str]) -> torch.Tensor:
        ids = [self.ids(c) for c in captions]
        offsets = torch.tensor([0, *np.cumsum([len(i) for i in ids])[:-1]], dtype=torch.long)
        return self.embedding(torch.tensor([x for i in ids for x in i], dtype=torch.long), offsets)


def ngrams(caption: str) -> list[str]:
    words = caption.lower().replace(",", " ").replace(";", " ").replace(":", " ").split()
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.t() / temperature
    target = torch.arange(len(a))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def _views(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random crop (50-100% of the area, aspect 3/4-4/3) resized back, then Gaussian noise
    (std up to 0.5 of the normalised range) and, half the time, a 3x3 box blur."""
    n, _, h, w = images.shape
    out = torch.empty_like(images)
    for i in range(n):
        area = float(torch.empty(1).uniform_(0.5, 1.0, generator=generator))
        ratio = float(torch.exp(torch.empty(1).uniform_(np.log(3 / 4), np.log(4 / 3), generator=generator)))
        ch = min(h, max(4, round(h * (area / ratio) ** 0.5)))
        cw = min(w, max(4, round(w * (area * ratio) ** 0.5)))
        y = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        x = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        crop = images[i : i + 1, :, y : y + ch, x : x + cw]
        out[i] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
    sigma = torch.rand(n, 1, 1, 1, generator=generator) * 0.5
    out = out + sigma * torch.randn(out.shape, generator=generator)
    blur = torch.rand(n, generator=generator) < 0.5
    if bool(blur.any()):
        kernel = torch.full((3, 1, 3, 3), 1.0 / 9)
        out[blur] = F.conv2d(F.pad(out[blur], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return out


@contextlib.contextmanager
def _seeded(seed: int):
    """The CPU generator seeded for a block and restored afterwards: fitting happens only when
    the cache is cold, so touching the global RNG would make a cold and a warm run differ."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


@torch.enable_grad()  # whoever builds the reference (under no_grad, say), fitting needs gradients
def fit_image_encoder(
    images: torch.Tensor, dim: int, epochs: int, batch_size: int, seed: int
) -> tuple[nn.Module, list]:
    """SimCLR on ``images`` (normalised, [N, 3, H, W]); returns the encoder and the loss per epoch."""
    batch_size = min(batch_size, len(images))  # a corpus smaller than a batch still trains
    generator = torch.Generator().manual_seed(seed)
    with _seeded(seed):  # the layers' initial weights, without touching the run's RNG
        encoder, head = ConvEncoder(dim), nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
    params = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    losses = []
    for _ in range(epochs):
        order, total = torch.randperm(len(images), generator=generator), 0.0
        for start in range(0, len(images) - batch_size + 1, batch_size):
            batch = images[order[start : start + batch_size]]
            a, b = _views(batch, generator), _views(batch, generator)
            loss = info_nce(head(encoder(a)), head(encoder(b)), temperature=0.2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / max(1, (len(images) // batch_size) * batch_size))
    return encoder.eval().requires_grad_(False), losses


@torch.enable_grad()
def fit_text_encoder(
    captions: list[list[str]], dim: int, epochs: int, batch_size: int, seed: int
) -> tuple[NGramEncoder, list]:
    """Contrastive training on two captions of one image (``captions``: per image, its captions)."""
    batch_size = min(batch_size, len(captions))
    generator = torch.Generator().manual_seed(seed)
    counts: dict[str, int] = {}
    for caps in captions:
        for caption in caps:
            for gram in ngrams(caption):
                counts[gram] = counts.get(gram, 0) + 1
    vocab = {g: i for i, g in enumerate(sorted(g for g, c in counts.items() if c >= 2))}
    with _seeded(seed):  # the embedding's initial weights, without touching the run's RNG
        encoder = NGramEncoder(vocab, dim)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=5e-3, weight_decay=1e-4)
    losses = []
    for _ in range(epochs):
        order, total, seen = torch.randperm(len(captions), generator=generator), 0.0, 0
        for start in range(0, len(captions) - batch_size + 1, batch_size):
            a, b = [], []
            for i in order[start : start + batch_size].tolist():
                pick = torch.randperm(len(captions[i]), generator=generator)[:2].tolist()
                a.append(captions[i][pick[0]])
                b.append(captions[i][pick[1]])
            loss = info_nce(encoder(a), encoder(b), temperature=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(a), seen + len(a)
        losses.append(total / max(1, seen))
    return encoder.eval().requires_grad_(False), losses


def load_corpus_images(directory: Path, rows: list[dict], size: int) -> torch.Tensor:
    from PIL import Image

    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    out = []
    for row in rows:
        with Image.open(directory / "images" / row["filename"]) as img:
            img = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
            out.append((torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1) - mean) / std)
    return torch.stack(out)


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class LearnedReference(nn.Module):
    """The learned image and text references of ``corpus`` (see the module docstring);
    ``image_size`` is the size the run's images have (``data.image_size``)."""

    kind = "learned"

    def __init__(
        self,
        corpus: str,
        image_size: int,
        image_dim: int = 64,
        text_dim: int = 64,
        image_epochs: int = 15,
        text_epochs: int = 30,
        batch_size: int = 128,
        seed: int = 0,
    ):
        super().__init__()
        directory = Path(corpus)
        if not (directory / "captions.json").is_file():
            raise ConfigError(
                f"reference=learned needs a reference corpus at {directory} (captions.json + images/): "
                "the synthetic data writes one with data.reference_images=N (data.generator_version=3 presets)"
            )
        settings = dict(
            image_size=int(image_size),
            image_dim=image_dim,
            text_dim=text_dim,
            image_epochs=image_epochs,
            text_epochs=text_epochs,
            batch_size=batch_size,
            seed=seed,
            version=2,  # 2: corpora smaller than a batch train (1 fitted nothing for them)
        )
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        digest.update((directory / "captions.json").read_bytes())
        self.directory = directory.parent / "learned_reference" / digest.hexdigest()[:12]
        self.image_dim, self.text_dim = int(image_dim), int(text_dim)
        self._fit_or_load(directory, settings)
        self._text: dict[str, torch.Tensor] = {}
        self._images: dict[str, dict[int, torch.Tensor]] = {}
        self._cacheable: dict[str, bool] = {}
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: BatchNorm keeps its fitted statistics

    def _fit_or_load(self, corpus: Path, settings: dict) -> None:
        from filelock import FileLock
        from safetensors.torch import load_file, save_file

        done = self.directory / "meta.json"
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.directory) + ".lock"):
            if not done.is_file():
                start = time.time()
                rows = json.loads((corpus / "captions.json").read_text())
                with _one_thread():
                    images = load_corpus_images(corpus, rows, settings["image_size"])
                    image_encoder, image_losses = fit_image_encoder(
                        images,
                        settings["image_dim"],
                        settings["image_epochs"],
                        settings["batch_size"],
                        settings["seed"],
                    )
                    text_encoder, text_losses = fit_text_encoder(
                        [r["captions"] for r in rows],
                        settings["text_dim"],
                        settings["text_epochs"],
                        settings["batch_size"],
                        settings["seed"],
                    )
                tmp = self.directory.with_name(self.directory.name + f".tmp{os.getpid()}")
                tmp.mkdir(parents=True, exist_ok=True)
                save_file(image_encoder.state_dict(), str(tmp / "image_encoder.safetensors"))
                save_file(text_encoder.state_dict(), str(tmp / "text_encoder.safetensors"))
                meta = {
                    **settings,
                    "corpus": str(corpus),
                    "corpus_images": len(rows),
                    "text_vocab": sorted(text_encoder.vocab, key=text_encoder.vocab.__getitem__),
                    "image_loss_per_epoch": image_losses,
                    "text_loss_per_epoch": text_losses,
                    "fit_seconds": round(time.time() - start, 1),
                }
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # last: its presence means complete
                os.replace(tmp, self.directory)
                log.info("learned reference fitted in %.0f s: %s", time.time() - start, self.directory)
        meta = json.loads(done.read_text())
        self.meta = {k: v for k, v in meta.items() if k != "text_vocab"}
        self.image_encoder = ConvEncoder(self.image_dim)
        self.image_encoder.load_state_dict(load_file(str(self.directory / "image_encoder.safetensors")))
        self.text_encoder = NGramEncoder({g: i for i, g in enumerate(meta["text_vocab"])}, self.text_dim)
        self.text_encoder.load_state_dict(load_file(str(self.directory / "text_encoder.safetensors")))
        self.image_encoder.requires_grad_(False).eval()
        self.text_encoder.requires_grad_(False).eval()

    def prepare(self, split_name: str, split, augmented: bool = False) -> None:
        """Embed the split's captions as the run has them (after any text imbalance); decide
        whether its image rows are cached (not when the images are augmented)."""
        if split_name not in self._text:
            with torch.no_grad():
                rows = [self.text_encoder(split.captions[i : i + 512]) for i in range(0, len(split.captions), 512)]
            self._text[split_name] = F.normalize(torch.cat(rows), dim=-1)
        self._cacheable[split_name] = not augmented
        self._images.setdefault(split_name, {})

    @torch.no_grad()
    def embed(self, kind: str, split: str, batch: dict) -> torch.Tensor:
        if kind == "text":
            if split not in self._text:
                raise RuntimeError(f"learned reference: split '{split}' was not prepared (call prepare first)")
            index = batch["caption_idx"]
            table = self._text[split]
            if table.device != index.device:
                table = self._text[split] = table.to(index.device)
            return table[index]
        images, index = batch["images"], batch["image_idx"]
        cache = self._images.get(split) if self._cacheable.get(split, False) else None
        if cache is not None and all(int(i) in cache for i in index):
            return torch.stack([cache[int(i)] for i in index]).to(images.device)
        images = images.to(next(self.image_encoder.parameters()).dtype)
        if images.shape[-1] != self.meta["image_size"]:
            size = (self.meta["image_size"],) * 2
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        rows = F.normalize(self.image_encoder(images), dim=-1)
        if cache is not None:
            for i, row in zip(index.tolist(), rows.cpu(), strict=True):
                cache[i] = row
        return rows
