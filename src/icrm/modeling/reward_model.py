"""RewardModel: a causal-LM backbone with a scalar value head.

``r_t = v(h_t)`` is the reward of the prefix ending at token ``t``; the
outcome reward is ``r`` at the last real token. The model keeps the backbone's
LM head too, and training adds two heads beside it, as the reference code
does (:meth:`RewardModel.prepare_training_heads`): a trainable copy for the
SFT regularizer, and a frozen copy that the ``self`` generator reads, so its
weights ``w_t`` cannot drift while the backbone trains. A separate SFT head
also keeps the SFT gradient off tied input embeddings, which on models with
``tie_word_embeddings`` *are* the LM head. It saves and loads as the
checkpoint format of :mod:`icrm.modeling.checkpoint`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..data import (
    DEFAULT_SEPARATOR,
    Message,
    RewardCollator,
    Sequence,
    cut_left,
    encode,
    encode_steps,
    last_token_index,
    messages_of,
    token_texts,
)
from ..losses import scale_grad, sft_nll
from ..outputs import library_bars_off
from ..threads import apply_default_threads
from .checkpoint import linear_copy, model_kind, read_side_files, write_checkpoint
from .loading import ModelError, fit_tokenizer, load_causal_lm, load_tokenizer, require_safetensors
from .packing import (
    PackedRewardCollator,
    PackingError,
    example_batches,
    model_inputs,
    shares_prefix,
    to_device,
    unpack,
    use_packed_attention,
)
from .peft import is_peft


class RewardOutput(NamedTuple):
    rewards: torch.Tensor
    hidden: torch.Tensor
    lm_loss: torch.Tensor | None


def _decoder_of(model) -> nn.Module:
    return getattr(model, model.base_model_prefix)


class RewardModel(nn.Module):
    """Backbone decoder + value head (``score``) + optional LM head."""

    def __init__(self, decoder: nn.Module, score: nn.Linear, lm_head: nn.Linear | None, config, tokenizer):
        super().__init__()
        self.decoder = decoder
        self.score_head = score
        self.head_dropout = nn.Dropout(0.0)  # TRL's ValueHead dropout; set by the trainer, off in eval
        self.lm_head = lm_head
        self.sft_head: nn.Linear | None = None
        self.register_buffer("generator_head", None)  # frozen LM-head copy for --generator self
        self.config = config
        self.tokenizer = tokenizer
        self.register_buffer("consistency_ema", torch.tensor(0.5))
        self.reward_stats: dict[str, float] = {}
        self.training_config: dict = {}
        self.padding_free = False  # how sequence_rewards batches (see use_padding_free)

    # -- construction

    @classmethod
    def from_causal_lm(cls, model, tokenizer) -> "RewardModel":
        """A new value head on a causal LM (TRL's value-head init std)."""
        hidden = model.config.hidden_size
        score = nn.Linear(hidden, 1, bias=False)
        nn.init.normal_(score.weight, std=1.0 / math.sqrt(hidden + 1))
        return cls(_decoder_of(model), score, model.get_output_embeddings(), model.config, tokenizer)

    @classmethod
    def from_sequence_classifier(cls, model, tokenizer, source: str = "the model") -> RewardModel:
        """Wrap a transformers sequence classifier (any HF reward model): its ``score`` is the value head."""
        if model.config.num_labels != 1 or not isinstance(getattr(model, "score", None), nn.Linear):
            raise ModelError(f"{source}: not a reward model (need num_labels=1 and a linear `score` head)")
        return cls(_decoder_of(model), model.score, None, model.config, tokenizer)

    @classmethod
    def from_model(cls, model, tokenizer) -> RewardModel:
        """A reward model from a loaded transformers model: a sequence classifier or a causal LM.

        The tokenizer gets a pad token distinct from EOS and a chat template
        where it lacks them (:func:`prepare_tokenizer`), and the model's
        embeddings grow to match.
        """
        from transformers import PreTrainedModel

        if not isinstance(model, PreTrainedModel):
            raise ModelError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
        if hasattr(model, "peft_config"):
            raise ModelError("got a PEFT model: merge its adapters first (merge_and_unload) or pass the base "
                             "model with peft_config")
        fit_tokenizer(model, tokenizer)
        if type(model).__name__.endswith("ForSequenceClassification"):
            return cls.from_sequence_classifier(model, tokenizer)
        if model.get_output_embeddings() is None:
            raise ModelError(f"{type(model).__name__} is neither a causal LM nor a sequence classifier")
        return cls.from_causal_lm(model, tokenizer)

    @classmethod
    def from_pretrained(
        cls, path: str, trust_remote_code: bool = False, allow_pickle: bool = False, tokenizer=None, **model_kwargs
    ) -> "RewardModel":
        """Load an icrm checkpoint, any HF sequence classifier, or a causal LM.

        ``tokenizer`` replaces the saved one; ``model_kwargs`` go to
        transformers' ``from_pretrained`` (``dtype``, ``revision``...).
        Applies icrm's CPU thread default unless the program chose its own
        (:func:`icrm.threads.apply_default_threads`).
        """
        apply_default_threads()
        kind = model_kind(path)
        if kind == "causal":
            model, tokenizer = load_causal_lm(path, trust_remote_code, allow_pickle, tokenizer, **model_kwargs)
            return cls.from_causal_lm(model, tokenizer)
        from transformers import AutoModelForSequenceClassification

        require_safetensors(path, allow_pickle)
        tokenizer = tokenizer or load_tokenizer(path, trust_remote_code, model_kwargs.get("revision"))
        try:
            with library_bars_off():
                seq = AutoModelForSequenceClassification.from_pretrained(
                    path, trust_remote_code=trust_remote_code, **model_kwargs
                )
        except Exception as err:
            raise ModelError(f"{path}: cannot load a reward model ({err.__class__.__name__}: {err})") from err
        fit_tokenizer(seq, tokenizer)
        rm = cls.from_sequence_classifier(seq, tokenizer, path)
        read_side_files(rm, path)
        return rm

    # -- training heads

    def prepare_training_heads(self, sft: bool, self_generator: bool) -> None:
        """Add the heads training needs; freeze the backbone's own LM head.

        ``sft``: a trainable copy of the LM head for the SFT term (kept when
        training continues from an icrm checkpoint that has one).
        ``self_generator``: a frozen copy, read by ``--generator self``. The
        original head is used by neither, so it is frozen — unless it is tied
        to the input embeddings, which must keep training as embeddings.
        """
        if (sft or self_generator) and self.lm_head is None:
            raise ModelError("the SFT term and --generator self need a backbone with an LM head")
        if sft and self.sft_head is None:
            self.sft_head = linear_copy(self.lm_head.weight.detach())
        if self_generator:
            self.register_buffer("generator_head", self.lm_head.weight.detach().clone())
        if self.lm_head is not None and not self.tied_lm_head:
            self.lm_head.requires_grad_(False)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs) -> None:
        """Recompute the backbone's activations in the backward pass (``TrainingArguments.activation_checkpointing``).

        Under PEFT the frozen embeddings' outputs are made to require grad, so
        reentrant checkpointing still reaches the adapters.
        """
        self.decoder.activation_checkpointing_enable(activation_checkpointing_kwargs, **kwargs)
        if is_peft(self.decoder):
            self.decoder.enable_input_require_grads()

    def use_padding_free(self, enabled: bool | None = True) -> RewardModel:
        """Score in padding-free (packed) batches, and let training pass packed ones (:mod:`icrm.modeling.packing`).

        Same rewards as padded batches up to float rounding; less compute
        wherever a batch would hold padding. ``None``: where the backbone's
        attention packs at no extra cost (see :func:`~icrm.modeling.use_packed_attention`).
        """
        self.padding_free = use_packed_attention(self.decoder, enabled)
        return self

    def collator(self, pad_to_multiple_of: int | None = None) -> RewardCollator:
        """What batches this model's rows: packed when padding-free, with shared prefixes where the attention allows."""
        if not self.padding_free:
            return RewardCollator(self.tokenizer.pad_token_id, pad_to_multiple_of)
        return PackedRewardCollator(self.tokenizer.pad_token_id, pad_to_multiple_of, shares_prefix(self.decoder))

    @property
    def tied_lm_head(self) -> bool:
        """Whether the LM head's weight is the input embedding matrix (``tie_word_embeddings``)."""
        embeddings = self.decoder.get_input_embeddings()
        return self.lm_head is not None and self.lm_head.weight.data_ptr() == embeddings.weight.data_ptr()

    # -- forward

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        lm_positions: torch.Tensor | None = None,
        lm_grad_scale: float = 1.0,
        packed: dict | None = None,
        **kwargs,
    ) -> RewardOutput:
        """Per-token rewards ``[N, L]``, hidden states, and the SFT head's loss where asked.

        ``lm_positions`` (bool ``[N, L]``) selects the positions whose next
        token the SFT regularizer predicts with the SFT head:
        :func:`~icrm.losses.sft_nll` of those tokens, per-row means averaged;
        the backbone gradient through them is scaled by ``lm_grad_scale``. It
        is computed here, inside ``forward``, so DDP and FSDP see every
        parameter use.
        ``packed`` (:func:`icrm.modeling.pack` of the same rows): the backbone
        runs on it instead, and its states are put back in the ``[N, L]``
        layout of ``attention_mask``, so everything after reads rows as usual
        (a shared prefix's states into every row that shares it).
        """
        if packed is None:
            out = self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
            hidden = out.last_hidden_state
        else:
            if "prefix_segments" in packed and not shares_prefix(self.decoder):
                raise PackingError(f"this batch shares prefixes, which {self.decoder.config._attn_implementation} "
                                   "attention cannot keep apart; batch it with RewardModel.collator()")
            out = self.decoder(**model_inputs(packed), use_cache=False, **kwargs)
            hidden = unpack(out.last_hidden_state, attention_mask, packed["index"])
        rewards = self.score_head(self.head_dropout(hidden)).squeeze(-1).float()
        lm_loss = None
        if lm_positions is not None:
            targets = input_ids[:, 1:][lm_positions[:, :-1]]
            rows = lm_positions.nonzero()[:, 0]
            lm_loss = sft_nll(scale_grad(hidden[lm_positions], lm_grad_scale), self.sft_head.weight, targets, rows)
        return RewardOutput(rewards, hidden, lm_loss)

    @staticmethod
    def outcome(rewards: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``R = r_e`` at the last real token of each row."""
        index = last_token_index(attention_mask)
        return rewards.gather(1, index[:, None]).squeeze(1)

    # -- inference API

    @torch.no_grad()
    def score(
        self, prompts: list[str | list[Message]], responses: list[str], batch_size: int = 16
    ) -> list[float]:
        """Outcome reward of each (prompt, response), batched by length."""
        return [float(r[-1]) for r in self.token_rewards_batch(prompts, responses, batch_size)]

    @torch.no_grad()
    def token_rewards_batch(
        self,
        prompts: list[str | list[Message]],
        responses: list[str],
        batch_size: int = 16,
        return_tokens: bool = False,
    ) -> list[torch.Tensor] | list[list[tuple[str, float]]]:
        """Prefix rewards over the response tokens of each pair (the last one is R).

        ``return_tokens=True`` pairs each reward with its token's text instead,
        ``[(token, reward), ...]`` per response (the texts join back into the
        response as the chat template renders it), as ``/score`` with
        ``per_token`` and ``icrm score --per-token`` show them.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        messages = [messages_of(p) for p in prompts]
        seqs = [encode(self.tokenizer, m, r) for m, r in zip(messages, responses)]
        rows = [rewards[seq.start :] for seq, rewards in zip(seqs, self.sequence_rewards(seqs, batch_size))]
        if not return_tokens:
            return rows
        return [
            list(zip(token_texts(self.tokenizer, m, r, seq, 0), row.tolist()))
            for m, r, seq, row in zip(messages, responses, seqs, rows)
        ]

    def token_rewards(
        self, prompt: str | list[Message], response: str, return_tokens: bool = False
    ) -> torch.Tensor | list[tuple[str, float]]:
        """:meth:`token_rewards_batch` of one pair: a tensor, or ``(token, reward)`` pairs with ``return_tokens``."""
        return self.token_rewards_batch([prompt], [response], return_tokens=return_tokens)[0]

    @torch.no_grad()
    def step_rewards_batch(
        self,
        prompts: list[str | list[Message]],
        steps: list[list[str]],
        separator: str = DEFAULT_SEPARATOR,
        batch_size: int = 16,
        max_length: int | None = None,
    ) -> list[list[float]]:
        """Process rewards: the prefix reward at the end of every step of each chain.

        A chain's response is its steps joined by ``separator``; step ``k``'s
        score is read at its last token, and the last step's where the outcome
        reward is (:mod:`icrm.data.steps`), so ``step_rewards(...)[-1]`` equals
        :meth:`score`. Works for any reward model: for an outcome RM it is its
        reading of the partial response. ``max_length`` cuts over-long prompts
        from the left, as training does (a chain that alone is longer is an error).
        """
        if len(prompts) != len(steps):
            raise ValueError(f"{len(prompts)} prompts but {len(steps)} chains of steps")
        seqs = [encode_steps(self.tokenizer, messages_of(p), s, separator) for p, s in zip(prompts, steps)]
        if max_length is not None:
            seqs = [cut_left(seq, max_length, f"chain {i}") for i, seq in enumerate(seqs)]
        rewards = self.sequence_rewards(seqs, batch_size)
        return [[float(row[end]) for end in seq.step_ends] for seq, row in zip(seqs, rewards)]

    def step_rewards(
        self, prompt: str | list[Message], steps: list[str], separator: str = DEFAULT_SEPARATOR,
        max_length: int | None = None,
    ) -> list[float]:
        return self.step_rewards_batch([prompt], [steps], separator, max_length=max_length)[0]

    @torch.no_grad()
    def sequence_rewards(self, seqs: list[Sequence], batch_size: int = 16, group_size: int = 1) -> list[torch.Tensor]:
        """The reward of every prefix of each tokenized sequence (one row per sequence), batched by length.

        The entry point for callers that tokenize themselves (``icrm serve``
        scores already-rendered texts, ``icrm score`` fitted sequences).
        Batches are packed when :meth:`use_padding_free` is on; ``group_size``:
        consecutive sequences are one example's rows, batched together to share
        their prefix where the attention allows (see :meth:`collator`; elsewhere
        each row is sorted by its own length, the least padding).
        """
        collate = self.collator()
        group_size = group_size if getattr(collate, "share_prefix", False) else 1
        device = next(self.parameters()).device
        results: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
        was_training = self.training
        self.eval()
        for items, rows in example_batches(seqs, batch_size, group_size):
            batch = collate(items)
            packed = to_device(batch.get("packed"), device)
            rewards = self(batch["input_ids"].to(device), batch["attention_mask"].to(device), packed=packed).rewards
            for row, i in enumerate(rows):
                results[i] = rewards[row, : seqs[i].length].cpu()
        self.train(was_training)
        return results

    # -- saving

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write a transformers sequence-classification checkpoint + icrm side files (:func:`write_checkpoint`).

        ``state_dict`` is this module's full state gathered by the caller (e.g.
        ``accelerator.get_state_dict`` under DeepSpeed ZeRO-3, where the local
        parameters are only shards). LoRA adapters are merged first.
        """
        write_checkpoint(self, directory, state_dict)
