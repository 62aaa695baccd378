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

Shared prefixes (icrm's SDPA attention only): the rows of one example (a
pair's chosen and rejected) begin with the same tokens, the rendered prompt
and often a system turn. With causal attention those tokens' states are the
same in both rows, so they are packed once: the example becomes one span
``[prefix, rest of row 1, rest of row 2]`` whose rows continue the prefix's
positions, and inside it each row's tokens see the prefix and themselves,
never the other row (:func:`span_mask`). The result is exact, not an
approximation; it removes the prefix's share of every layer's compute. The
flash kernels and transformers' position-id masks know only end-to-end rows,
so only :func:`packed_sdpa_attention` is given such batches.

Everything after the backbone keeps reading ``[N, L]`` rows: the packed
hidden states are put back into the padded layout (:func:`unpack`, a gather
that reads a shared prefix into every row that shares it, so its gradient is
the sum of the rows' as in a padded batch), and outcome rewards, per-token
rewards, response masks, generator weights, the consistency pairs and the SFT
targets are exactly those of a padded batch. The collator therefore returns
both: the padded views (small integer tensors) and ``packed``, the model inputs
plus the gather index.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..data import RewardCollator, Sequence
from ..errors import UserError

PACKED_ATTENTION = "icrm_packed_sdpa"
BOUNDARY_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


class PackingError(UserError):
    """A model that cannot take padding-free batches."""


# ------------------------------------------------------------------ batches


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, group_size: int = 1) -> dict:
    """The real tokens of a right-padded ``[N, L]`` batch as one ``[1, T]`` sequence (model inputs), and ``index``.

    ``index`` (``[N, L]``) is each real token's place in the packed sequence,
    what :func:`unpack` reads. ``group_size`` > 1: the rows are examples'
    ``group_size`` rows in the collator's layout (all first rows, then all
    second rows, ...), and the tokens an example's rows start with in common are
    packed once (``prefix_segments``; see the module docstring). Each row keeps
    at least its last token, whose state is its outcome reward.
    """
    device = input_ids.device
    lengths = attention_mask.bool().sum(-1).tolist()
    examples = input_ids.shape[0] // group_size
    ids, positions, segments, spans = [], [], [], [0]
    index = torch.zeros_like(input_ids)
    offset, any_shared = 0, False  # tokens packed so far
    for example in range(examples):
        rows = [slot * examples + example for slot in range(group_size)]
        shared = common_prefix(input_ids, rows, lengths) if group_size > 1 else 0
        if shared:  # the prefix, once, at the head of the example's span
            ids.append(input_ids[rows[0], :shared])
            positions.append(torch.arange(shared, device=device))
            segments.append(torch.zeros(shared, dtype=torch.long, device=device))
            index[rows, :shared] = torch.arange(shared, device=device) + offset
            offset, any_shared = offset + shared, True
        for slot, row in enumerate(rows):
            own = lengths[row] - shared
            ids.append(input_ids[row, shared : lengths[row]])
            positions.append(torch.arange(shared, lengths[row], device=device))
            segments.append(torch.full((own,), slot + 1 if shared else 1, dtype=torch.long, device=device))
            index[row, shared : lengths[row]] = torch.arange(own, device=device) + offset
            offset += own
            if not shared:
                spans.append(offset)
        if shared:
            spans.append(offset)
    cu = torch.tensor(spans, dtype=torch.int32, device=device)
    longest = int(cu.diff().max())
    packed = {
        "input_ids": torch.cat(ids)[None],
        "position_ids": torch.cat(positions)[None],
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
        "index": index,
    }
    if any_shared:
        packed["prefix_segments"] = torch.cat(segments)
    return packed


def common_prefix(input_ids: torch.Tensor, rows: list[int], lengths: list[int]) -> int:
    """How many leading tokens ``rows`` all have in common, leaving each row at least one of its own."""
    limit = min(lengths[r] for r in rows) - 1
    same = (input_ids[rows, :limit] == input_ids[rows[0], :limit]).all(0)
    return int(same.long().cumprod(0).sum())


def unpack(packed: torch.Tensor, attention_mask: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Packed ``[1, T, ...]`` values back in the ``[N, L]`` layout of ``attention_mask`` (zeros at padding).

    ``index``: :func:`pack`'s; without it the rows lie end to end.
    """
    keep = attention_mask.bool()
    if index is None:
        index = torch.zeros_like(keep, dtype=torch.long)
        index[keep] = torch.arange(int(keep.sum()), device=keep.device)
    out = packed.new_zeros(*keep.shape, *packed.shape[2:])
    out[keep] = packed[0][index[keep]]
    return out


def model_inputs(packed: dict) -> dict:
    """:func:`pack`'s dict less the gather index: what the backbone is called with."""
    return {k: v for k, v in packed.items() if k != "index"}


def to_device(packed: dict | None, device) -> dict | None:
    """The tensors of :func:`pack`'s dict moved to ``device`` (None stays None)."""
    return None if packed is None else {k: v.to(device) if torch.is_tensor(v) else v for k, v in packed.items()}


def example_batches(sequences: list[Sequence], batch_size: int, group_size: int = 1) -> Iterator[tuple[list[dict], list[int]]]:
    """Collator items of about ``batch_size`` rows, shortest first, and the sequence index of each collated row.

    ``group_size``: consecutive sequences are one example's rows (a pair's
    chosen and rejected), kept in one item so that they can share a prefix.
    Rows come out as the collator lays them: all first rows, then all second rows.
    """
    groups = [list(range(i, i + group_size)) for i in range(0, len(sequences), group_size)]
    groups.sort(key=lambda g: max(sequences[i].length for i in g))
    per_batch = max(1, batch_size // group_size)
    for lo in range(0, len(groups), per_batch):
        chunk = groups[lo : lo + per_batch]
        yield [{"sequences": [sequences[i] for i in g]} for g in chunk], [g[s] for s in range(group_size) for g in chunk]


class PackedRewardCollator(RewardCollator):
    """:class:`~icrm.data.RewardCollator`'s batch plus ``packed``: the same rows with no padding.

    The padded tensors stay for the losses (``response_mask``, ``gen_weights``
    and the token ids the SFT term predicts are read per row); the model runs
    on ``packed``. A batch with no padding at all (rows of one length, or a
    single row) is left unpacked: packing could only cost there (the row-by-row
    attention), unless its examples' rows share a prefix. ``share_prefix``:
    pack those prefixes once (only for :func:`packed_sdpa_attention`: see
    :func:`shares_prefix` and :meth:`icrm.modeling.RewardModel.collator`).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, share_prefix: bool = False):
        super().__init__(pad_token_id, pad_to_multiple_of)
        self.share_prefix = share_prefix

    def __call__(self, items: list[dict]) -> dict:
        batch = super().__call__(items)
        if not self.share_prefix and batch["attention_mask"].all():
            return batch  # nothing to remove: no need to pack
        group_size = len(items[0]["sequences"]) if self.share_prefix else 1
        packed = pack(batch["input_ids"], batch["attention_mask"], group_size)
        if "prefix_segments" in packed or not batch["attention_mask"].all():
            batch["packed"] = packed
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


def shares_prefix(model: torch.nn.Module) -> bool:
    """Whether ``model`` (a backbone or a peft wrapper) runs :func:`packed_sdpa_attention`, which can take shared prefixes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.config, "_attn_implementation", None) == PACKED_ATTENTION


def packed_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention, one packed span at a time.

    With no padding mask and no cache, each span (the slices between
    ``cu_seq_lens_q``, or the whole row of an unpacked batch) attends causally
    within itself and within the layer's ``sliding_window``, if any; a span
    whose rows share a prefix (``prefix_segments``) through :func:`span_mask`.
    Otherwise (padding, or decoding with a cache) this is plain SDPA attention.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.pop("cu_seq_lens_q", None)
    segments = kwargs.pop("prefix_segments", None)
    for name in BOUNDARY_KEYS[1:]:
        kwargs.pop(name, None)
    if attention_mask is not None or key.shape[2] != query.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    lengths = bounds.diff().tolist() if bounds is not None else [query.shape[2]]
    window = kwargs.get("sliding_window")
    spans = segments.split(lengths) if segments is not None else [None] * len(lengths)
    outputs = []
    # split, not slicing: its backward is one concatenation, where each slice's would fill a full-size gradient
    for q, k, v, span in zip(*(x.split(lengths, dim=2) for x in (query, key, value)), spans):
        shared = span is not None and bool(span[0] == 0)
        mask = None
        if shared or (window and q.shape[2] > window):
            mask = span_mask(span if shared else q.new_ones(q.shape[2], dtype=torch.long), window)
        outputs.append(sdpa_attention_forward(module, q, k, v, mask, **kwargs)[0])
    return torch.cat(outputs, dim=1), None


def span_mask(segments: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Which keys each query of a packed span sees, ``[1, 1, S, S]`` (bool).

    ``segments``: 0 on a shared prefix, ``j`` on row ``j``'s own tokens (a
    span of one row: all 1). Causal, and a row's token sees the prefix and its
    own row only; with a ``window``, only keys fewer than ``window`` positions
    back, as transformers' ``sliding_window_overlay`` (positions continue the
    prefix in every row, as :func:`pack` numbers them).
    """
    order = torch.arange(len(segments), device=segments.device)
    same = segments[:, None] == segments[None, :]
    mask = (order[None, :] <= order[:, None]) & (same | (segments == 0)[None, :])
    if window:
        shared = int((segments == 0).sum())
        rank = (same & (order[None, :] < order[:, None])).sum(-1)  # earlier tokens of the same segment
        position = torch.where(segments == 0, order, shared + rank)
        mask &= position[None, :] > position[:, None] - window
    return mask[None, None]


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
