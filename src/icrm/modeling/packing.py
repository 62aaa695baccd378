"""Padding-free batches: the rows of a batch run through the backbone as one packed sequence.

Random batches of real preference data hold much padding, since their
lengths vary widely, and a padded forward spends its FLOPs on it. Packed, the rows
are concatenated into a single ``[1, T]`` sequence whose ``position_ids``
restart at 0 for every row, with the row boundaries passed under
transformers' flash-attention names (``cu_seq_lens_q``/``cu_seq_lens_k``,
``max_length_q``/``max_length_k``), so no token attends across rows:

* ``flash_attention_*`` (GPU): transformers' varlen kernels read them.
* ``sdpa``: :func:`use_packed_attention` swaps in :func:`packed_sdpa_attention`,
  which runs transformers' own SDPA attention on each row's slice of the
  packed queries/keys/values (causal, plus the layer's ``sliding_window``
  where it has one, as the flash kernels apply it). transformers' own SDPA
  path would build a dense ``T × T`` block-diagonal mask instead: correct,
  but attention then costs ``T²`` rather than ``Σ len²``, which on CPU ate
  most of the gain.
* anything else (``eager``, ``flex_attention``): transformers' packed-sequence
  detection from ``position_ids`` builds that block-diagonal mask (correct, dense).

Everything after the backbone keeps reading ``[N, L]`` rows: the packed
hidden states are put back into the padded layout (:func:`unpack`, an
elementwise scatter), so outcome rewards, per-token rewards, response masks,
generator weights, the consistency pairs and the SFT targets are exactly
those of a padded batch. The collator therefore returns both: the padded
views (small integer tensors) and ``packed``, the model inputs.
"""

from __future__ import annotations

import torch

from ..data import RewardCollator
from ..errors import UserError

PACKED_ATTENTION = "icrm_packed_sdpa"
BOUNDARY_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


class PackingError(UserError):
    """A model that cannot take padding-free batches."""


# ------------------------------------------------------------------ batches


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """The real tokens of a right-padded ``[N, L]`` batch as one ``[1, T]`` sequence (model inputs)."""
    keep = attention_mask.bool()
    lengths = keep.sum(-1)
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    longest = int(lengths.max())
    positions = torch.arange(attention_mask.shape[-1], device=input_ids.device).expand_as(input_ids)
    return {
        "input_ids": input_ids[keep][None],
        "position_ids": positions[keep][None],
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def unpack(packed: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Packed ``[1, T, ...]`` values back in the ``[N, L, ...]`` layout of ``attention_mask`` (zeros at padding)."""
    keep = attention_mask.bool()
    out = packed.new_zeros(*keep.shape, *packed.shape[2:])
    out[keep] = packed[0]
    return out


def to_device(packed: dict | None, device) -> dict | None:
    """The tensors of :func:`pack`'s model inputs moved to ``device`` (None stays None)."""
    return None if packed is None else {k: v.to(device) if torch.is_tensor(v) else v for k, v in packed.items()}


class PackedRewardCollator(RewardCollator):
    """:class:`~icrm.data.RewardCollator`'s batch plus ``packed``: the same rows with no padding.

    The padded tensors stay for the losses (``response_mask``, ``gen_weights``
    and the token ids the SFT term predicts are read per row); the model runs
    on ``packed``. A batch with no padding at all (rows of one length, or a
    single row) is left unpacked: packing could only cost there (the row-by-row
    attention).
    """

    def __call__(self, items: list[dict]) -> dict:
        batch = super().__call__(items)
        if not batch["attention_mask"].all():
            batch["packed"] = pack(batch["input_ids"], batch["attention_mask"])
        return batch


class PackedSFTCollator:
    """``icrm sft --packing``: TRL's padding-free language-modelling collator on icrm's tokenized rows.

    Loss on response tokens only, as :class:`~icrm.training.SFTCollator`; TRL's
    collator also masks the first token of every row, so no row predicts
    across a boundary.
    """

    def __init__(self, pad_token_id: int):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.inner = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)

    def __call__(self, items: list[dict]) -> dict:
        rows = [seq for item in items for seq in item["sequences"]]
        return self.inner([{"input_ids": s.input_ids, "labels": [-100] * s.start + s.input_ids[s.start :]} for s in rows])


# ---------------------------------------------------------------- attention


def use_packed_attention(model: torch.nn.Module, enabled: bool | None = True) -> bool:
    """Make a transformers backbone (or a peft wrapper of one) take packed batches; returns whether to pack.

    ``enabled=None`` packs where it costs nothing extra: SDPA (which becomes
    :func:`packed_sdpa_attention`, the same as SDPA on padded batches) and
    flash attention. ``True`` also packs with the other implementations of
    transformers' attention interface (eager, flex: a dense block mask);
    a model outside that interface cannot keep packed rows apart and is
    refused. ``False`` never packs.
    """
    if enabled is False:
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    supported = getattr(base, "_supports_attention_backend", False)
    implementation = base.config._attn_implementation if supported else None
    if enabled is None and implementation not in ("sdpa", PACKED_ATTENTION) and not str(implementation).startswith("flash"):
        return False
    if not supported:
        raise PackingError(
            f"{type(base).__name__} does not support padding-free batches (it does not use transformers' "
            "attention interface); run without --packing (padding_free=False)"
        )
    if implementation == "sdpa":
        base.config._attn_implementation = PACKED_ATTENTION
    return True


def packed_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention, one packed row at a time.

    With no padding mask and no cache, each row (the slices between
    ``cu_seq_lens_q``, or the whole row of an unpacked batch) attends causally
    within itself and within the layer's ``sliding_window``, if any. Otherwise
    (padding, or decoding with a cache) this is plain SDPA attention.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.pop("cu_seq_lens_q", None)
    for name in BOUNDARY_KEYS[1:]:
        kwargs.pop(name, None)
    if attention_mask is not None or key.shape[2] != query.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    lengths = bounds.diff().tolist() if bounds is not None else [query.shape[2]]
    window = kwargs.get("sliding_window")
    outputs = []
    # split, not slicing: its backward is one concatenation, where each slice's would fill a full-size gradient
    for q, k, v in zip(*(x.split(lengths, dim=2) for x in (query, key, value))):
        length = q.shape[2]
        mask = _sliding_window_mask(length, window, q.device) if window and length > window else None
        outputs.append(sdpa_attention_forward(module, q, k, v, mask, **kwargs)[0])
    return torch.cat(outputs, dim=1), None


def _sliding_window_mask(length: int, window: int, device) -> torch.Tensor:
    """Causal attention over the last ``window`` positions (transformers' ``sliding_window_overlay``)."""
    q = torch.arange(length, device=device)[:, None]
    kv = torch.arange(length, device=device)[None, :]
    return ((kv <= q) & (kv > q - window))[None, None]


def _packed_attention_mask(*, q_length, kv_length, attention_mask=None, **kwargs):
    """No ``T × T`` mask without padding or cache (the attention keeps rows apart); SDPA's mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and q_length == kv_length:
        return None
    return sdpa_mask(q_length=q_length, kv_length=kv_length, attention_mask=attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_ATTENTION, _packed_attention_mask)


_register()
