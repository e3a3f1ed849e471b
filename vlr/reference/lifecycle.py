"""The run's reference from building to checkpoint: what `RetrievalModule` calls, at which hook.

- built with the module (`build_reference`): ``frozen_init`` copies the towers only for an
  objective that distils during training; otherwise `InitialEvalRows` keeps evaluation rows;
- ``setup`` of every stage (`prepare_reference`): each split the stage reads is prepared, and
  `InitialEvalRows` embeds the evaluation splits with the towers as built (the test split too
  when fitting), on the device the strategy runs on;
- training starts (`training_started`): from here on no evaluation row can be computed;
- checkpoints (`checkpoint_entries`, `load_checkpoint_entries`): those rows travel next to the
  weights; `with_configured_reference` keeps the reference configured here when a checkpoint was
  written with another one (the reference never trains, so a model is scored against either).

The module asks nothing else of a reference than `Reference` and these functions; what differs
between references stays here.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, cast

import torch
from torch import nn

from vlr.errors import ConfigError
from vlr.reference.protocol import Reference
from vlr.reference.references import FrozenInitReference, InitialEvalRows

log = logging.getLogger(__name__)

ROWS_KEY = "vlr_reference_rows"  # the checkpoint entry holding `InitialEvalRows`' rows
PREFIX = "reference."  # the reference's tensors in the module's state dict


def _is_frozen_init_factory(reference: Any) -> bool:
    func = reference.func if isinstance(reference, functools.partial) else reference
    return func is FrozenInitReference


def build_reference(reference: Any, encoder: nn.Module, training_rows: bool = True) -> Reference:
    """The module's reference: a built reference as is, a factory (the ``frozen_init`` config is a
    ``_partial_``) called with the encoder, ``None`` the frozen initial towers. ``training_rows``:
    whether the objective asks for reference rows of training batches; without it ``frozen_init``
    keeps evaluation rows only (`InitialEvalRows`), not a copy of the towers."""
    if reference is None:
        reference = FrozenInitReference
    if isinstance(reference, nn.Module):
        return cast(Reference, reference)
    if callable(reference):
        if not training_rows and _is_frozen_init_factory(reference):
            return InitialEvalRows(encoder, **getattr(reference, "keywords", {}))
        return reference(encoder)
    raise ConfigError(
        f"reference must be a reference module or a factory of the encoder, got {type(reference).__name__}"
    )


def prepare_reference(
    reference: Reference, stage: str, split: str, datamodule: Any, encoder: nn.Module, device: torch.device
) -> None:
    """``setup(stage)``, evaluating on ``split``: prepare the splits the stage reads (fitting reads
    the training split too), and embed the evaluation rows `InitialEvalRows` keeps, before any step
    and before a checkpoint's weights load (Lightning calls ``setup`` first): the test split too
    when fitting, since the test after training must not see the trained towers. Each rank embeds
    the whole split (unsharded loaders)."""
    for name in ("train", split) if stage == "fit" else (split,):
        reference.prepare(name, datamodule.split(name), augmented=name == "train" and datamodule.augment)
    if isinstance(reference, InitialEvalRows):
        encoder.to(device)  # where the strategy puts it next anyway
        for name in ("val", "test") if stage == "fit" else (split,):
            loaders = datamodule.val_dataloader() if name == "val" else datamodule.test_dataloader()
            reference.precompute(name, datamodule.split(name), loaders, device)


def training_started(reference: Reference) -> None:
    """The towers are about to train: rows computed from them later would not be the initial ones."""
    if isinstance(reference, InitialEvalRows):
        reference.towers_trained = True


def checkpoint_entries(reference: Reference) -> dict[str, Any]:
    """What a checkpoint holds of the reference besides its tensors (``reference.*`` in the state dict)."""
    return {ROWS_KEY: reference.rows_state()} if isinstance(reference, InitialEvalRows) else {}


def load_checkpoint_entries(reference: Reference, checkpoint: dict) -> None:
    """A checkpoint's `checkpoint_entries`, before its weights replace the towers."""
    if isinstance(reference, InitialEvalRows):
        reference.load_rows_state(checkpoint.get(ROWS_KEY, {}))


def with_configured_reference(reference: Reference, state_dict: dict) -> dict:
    """A checkpoint's tensors with the reference's as configured here, when the checkpoint was
    written with another reference. The reference never trains, so a model trained with
    ``reference=oracle`` can be scored against ``reference=frozen_init`` (the towers as built here:
    the run's own initial towers when they are pretrained) and the other way round; same
    reference, the checkpoint's copy."""
    own = {PREFIX + k: v for k, v in reference.state_dict().items()} if isinstance(reference, nn.Module) else {}
    theirs = {k for k in state_dict if k.startswith(PREFIX)}
    if theirs == set(own):
        return state_dict
    log.warning(
        "the checkpoint was written with another reference (%d reference tensors, %d configured here): "
        "overlap@k is measured against the one configured here (%s)",
        len(theirs),
        len(own),
        type(reference).__name__,
    )
    return {k: v for k, v in state_dict.items() if not k.startswith(PREFIX)} | own
