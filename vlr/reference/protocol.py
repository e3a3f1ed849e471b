"""`Reference`: what the module and the objectives ask of the run's reference, whatever it is.

A reference (frozen initial towers, feature files, encoders learned from another corpus) is
written against this protocol, not a base class: `RetrievalModule`, the objectives and
`vlr.reference.lifecycle` call these members and nothing else, so a new reference needs these
and a config in ``vlr/conf/reference/``. References that hold tensors are ``nn.Module``s, so
their tensors travel in checkpoints under ``reference.``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Reference(Protocol):
    """The intra-modal reference of a run (see `vlr.reference`)."""

    image_dim: int  # width of the image rows `embed` returns (objectives size their heads from it)
    text_dim: int  # width of the caption rows

    def prepare(self, split_name: str, split: Any, augmented: bool = False) -> None:
        """Called once per split before its rows are asked for (``split``: a `CaptionSplit`;
        ``augmented``: whether its images are augmented, so an item's rows change between epochs)."""
        ...

    def embed(self, kind: str, split: str, batch: dict) -> torch.Tensor:
        """The L2-normalised reference rows (``kind``: ``"image"`` or ``"text"``) of ``batch``'s
        items of ``split``, looked up or computed by dataset index."""
        ...
