"""RewardModel: a causal-LM backbone with a scalar value head.

``r_t = v(h_t)`` is the reward of the prefix ending at token ``t``; the
outcome reward is ``r`` at the last real token. The model keeps the backbone's
LM head too, and training adds two heads beside it, as the reference code
does (:meth:`RewardModel.prepare_training_heads`): a trainable copy for the
SFT regularizer, and a frozen copy that the ``self`` generator reads, so its
weights ``w_t`` cannot drift while the backbone trains. A separate SFT head
also keeps the SFT gradient off tied input embeddings, which on models with
``tie_word_embeddings`` *are* the LM head.

Checkpoints are plain transformers sequence-classification directories
(``AutoModelForSequenceClassification.from_pretrained`` loads them with no
custom code: value head saved as ``score``, ``num_labels=1``, ``pad_token_id``
set, LoRA merged) plus icrm side files: the LM head, the training config and
the state of the consistency normalizer.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Iterable, NamedTuple

import torch
from safetensors.torch import load_file, save_file
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
from ..errors import UserError
from ..losses import scale_grad
from ..outputs import library_bars_off
from ..threads import apply_default_threads
from .packing import PackedRewardCollator, to_device, unpack, use_packed_attention

ICRM_CONFIG = "icrm_config.json"
ICRM_STATE = "icrm_state.json"
LM_HEAD_FILE = "icrm_lm_head.safetensors"
WEIGHTS_FILE = "model.safetensors"

PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, vocab_size=1024),
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8, vocab_size=4096),
}

# One turn per message, each closed by <|end|>, which is also EOS: the outcome
# reward is read at the <|end|> that closes the assistant's answer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
PAD_TOKEN = "<|pad|>"


class RewardOutput(NamedTuple):
    rewards: torch.Tensor
    hidden: torch.Tensor
    lm_logits: torch.Tensor | None


class ModelError(UserError):
    """A model path or checkpoint that cannot be used as asked."""


# ------------------------------------------------------------- tiny backbones


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on the given text, with a chat template.

    Used by ``--model tiny|small`` so tests and the demo need no download.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<|end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_causal_lm(preset: str, tokenizer, seed: int = 0):
    """A freshly initialised small Llama with the tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = dict(PRESETS[preset])
    spec["vocab_size"] = len(tokenizer)
    config = LlamaConfig(
        **spec,
        num_key_value_heads=spec["num_attention_heads"],
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


# --------------------------------------------------------- loading backbones


def prepare_tokenizer(tokenizer) -> bool:
    """Give the tokenizer a pad token distinct from EOS and a chat template.

    HF sequence classifiers find the last token by searching for
    ``pad_token_id``; with pad == EOS they would read the token before EOS.
    Returns True when a token was added (the embeddings must grow).
    """
    added = False
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        added = True
    if not tokenizer.chat_template:
        eos = tokenizer.eos_token or ""
        tokenizer.chat_template = CHAT_TEMPLATE.replace("<|end|>", eos)
    tokenizer.padding_side = "right"
    return added


HUB_ID = re.compile(r"\w[\w.-]*(/\w[\w.-]*)?")  # "name" or "namespace/name"


def check_model_path(path: str) -> None:
    """Fail at once on a model path that evidently names a missing local directory.

    transformers tries any missing path as a hub id, and without network it
    retries for most of a minute before giving up. A path is taken as local,
    and never sent to the hub, when it cannot be a hub id (``./x``, ``/x``,
    ``a/b/c``) or when its parent directory exists (``runs/rm-icrn`` beside
    ``runs/``): then a close sibling is suggested, for the usual typo.
    """
    local = Path(path)
    if local.exists():
        return
    if not HUB_ID.fullmatch(path):
        raise ModelError(f"{path}: no such directory")
    parent = local.parent
    if parent != Path(".") and parent.is_dir():
        siblings = [entry.name for entry in parent.iterdir() if entry.is_dir()]
        close = difflib.get_close_matches(local.name, siblings, n=1)
        hint = f" (did you mean {parent / close[0]}?)" if close else ""
        raise ModelError(f"{path}: no such directory in {parent}/{hint}")


def load_tokenizer(path: str, trust_remote_code: bool = False, revision: str | None = None):
    """The tokenizer of a local directory or hub id (every model loader starts here).

    A missing local path is reported as such (:func:`check_model_path`), not
    after the hub's retries or as its complaint about an invalid repo id.
    """
    from huggingface_hub import is_offline_mode
    from transformers import AutoTokenizer

    check_model_path(path)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    except Exception as err:
        if not Path(path).exists():
            if is_offline_mode():
                raise ModelError(f"{path}: no such directory, and not in the hub cache (HF_HUB_OFFLINE=1)") from err
            reason = re.split(r"\.\s", str(err))[0]
            raise ModelError(f"{path}: no such directory, and the hub could not provide it ({reason}); "
                             "without network, set HF_HUB_OFFLINE=1 to use only cached models") from err
        raise ModelError(f"{path}: cannot load a tokenizer ({err.__class__.__name__}: {err})") from err


def fit_tokenizer(model, tokenizer) -> None:
    """Prepare the tokenizer (:func:`prepare_tokenizer`) and make the model agree with it."""
    if prepare_tokenizer(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id


def load_causal_lm(
    path: str, trust_remote_code: bool = False, allow_pickle: bool = False, tokenizer=None, **model_kwargs
):
    """A pretrained causal LM and its prepared tokenizer (the saved one unless given), from a path or hub id.

    ``model_kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` (``dtype``,
    ``revision``, ``attn_implementation``...); ``revision`` also picks the tokenizer's.
    """
    from transformers import AutoModelForCausalLM

    require_safetensors(path, allow_pickle)
    tokenizer = tokenizer or load_tokenizer(path, trust_remote_code, model_kwargs.get("revision"))
    try:
        with library_bars_off():
            model = AutoModelForCausalLM.from_pretrained(
                path, trust_remote_code=trust_remote_code, use_safetensors=not allow_pickle or None, **model_kwargs
            )
    except Exception as err:
        raise ModelError(f"{path}: cannot load a causal language model ({err.__class__.__name__}: {err})") from err
    fit_tokenizer(model, tokenizer)
    return model, tokenizer


def require_safetensors(path: str, allow_pickle: bool) -> None:
    """Refuse local checkpoints that only have pickle weights (unsafe to load)."""
    local = Path(path)
    if not local.is_dir() or allow_pickle:
        return
    if not any(local.glob("*.safetensors")) and any(local.glob("*.bin")):
        raise ModelError(f"{path}: only pickle (.bin) weights found; pass --allow-pickle to load them anyway")


def model_kind(path: str) -> str:
    """``icrm`` (our checkpoint), ``classifier`` (any HF RM) or ``causal``; a missing local path fails here."""
    check_model_path(path)
    local = Path(path)
    if (local / ICRM_CONFIG).exists():
        return "icrm"
    config_file = local / "config.json"
    if local.is_dir() and not config_file.exists():
        raise ModelError(f"{path}: not a model directory (no config.json)")
    if config_file.exists():
        architectures = json.loads(config_file.read_text()).get("architectures") or []
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            return "classifier"
    return "causal"


# ------------------------------------------------------------- the reward model


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
        local = Path(path)
        if (local / LM_HEAD_FILE).exists():
            heads = load_file(str(local / LM_HEAD_FILE))
            rm.lm_head = _linear(heads["weight"])
            rm.sft_head = _linear(heads["sft_weight"]) if "sft_weight" in heads else None
        if (local / ICRM_STATE).exists():
            state = json.loads((local / ICRM_STATE).read_text())
            rm.consistency_ema.fill_(state.get("consistency_ema", 0.5))
            rm.reward_stats = state.get("reward_stats", {})
        if (local / ICRM_CONFIG).exists():
            rm.training_config = json.loads((local / ICRM_CONFIG).read_text())
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
            self.sft_head = _linear(self.lm_head.weight.detach())
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
        """Score in padding-free (packed) batches, and let training pass packed ones (:mod:`icrm.packing`).

        Same rewards as padded batches up to float rounding; less compute
        wherever a batch would hold padding. ``None``: where the backbone's
        attention packs at no extra cost (see :func:`~icrm.packing.use_packed_attention`).
        """
        self.padding_free = use_packed_attention(self.decoder, enabled)
        return self

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
        """Per-token rewards ``[N, L]``, hidden states, and LM logits where asked.

        ``lm_positions`` (bool ``[N, L]``) selects the positions whose next-token
        logits the SFT regularizer needs, from the SFT head; the backbone
        gradient through them is scaled by ``lm_grad_scale``. They are computed
        here, inside ``forward``, so DDP sees every parameter use.
        ``packed`` (:func:`icrm.packing.pack` of the same rows): the backbone
        runs on it instead, and its states are put back in the ``[N, L]``
        layout of ``attention_mask``, so everything after reads rows as usual.
        """
        if packed is None:
            out = self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
            hidden = out.last_hidden_state
        else:
            hidden = unpack(self.decoder(**packed, use_cache=False, **kwargs).last_hidden_state, attention_mask)
        rewards = self.score_head(self.head_dropout(hidden)).squeeze(-1).float()
        lm_logits = None
        if lm_positions is not None:
            lm_logits = self.sft_head(scale_grad(hidden[lm_positions], lm_grad_scale))
        return RewardOutput(rewards, hidden, lm_logits)

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
        reward is (:mod:`icrm.steps`), so ``step_rewards(...)[-1]`` equals
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
    def sequence_rewards(self, seqs: list[Sequence], batch_size: int = 16) -> list[torch.Tensor]:
        """The reward of every prefix of each tokenized sequence (one row per sequence), batched by length.

        The entry point for callers that tokenize themselves (``icrm serve``
        scores already-rendered texts, ``icrm score`` fitted sequences).
        Batches are packed when :meth:`use_padding_free` is on.
        """
        order = sorted(range(len(seqs)), key=lambda i: seqs[i].length)
        collate = (PackedRewardCollator if self.padding_free else RewardCollator)(self.tokenizer.pad_token_id)
        device = next(self.parameters()).device
        results: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
        was_training = self.training
        self.eval()
        for lo in range(0, len(order), batch_size):
            chunk = order[lo : lo + batch_size]
            batch = collate([{"sequences": [seqs[i]]} for i in chunk])
            packed = to_device(batch.get("packed"), device)
            rewards = self(batch["input_ids"].to(device), batch["attention_mask"].to(device), packed=packed).rewards
            for row, i in enumerate(chunk):
                results[i] = rewards[row, : seqs[i].length].cpu()
        self.train(was_training)
        return results

    # -- saving

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write a transformers sequence-classification checkpoint + icrm side files.

        ``state_dict`` is this module's full state gathered by the caller (e.g.
        ``accelerator.get_state_dict`` under DeepSpeed ZeRO-3, where the local
        parameters are only shards). LoRA adapters are merged first.
        """
        import transformers
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        )

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if state_dict is None:
            state_dict = self.state_dict()
        class_name = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(self.config.model_type)
        if class_name is None:
            raise ModelError(f"transformers has no sequence classifier for model type {self.config.model_type!r}")
        prefix = getattr(transformers, class_name).base_model_prefix
        if is_peft(self.decoder):
            backbone = merged_state_dict(self.decoder)
        else:
            backbone = {key[len("decoder."):]: value for key, value in state_dict.items() if key.startswith("decoder.")}
        weights = {f"{prefix}.{key}": value.detach().contiguous().cpu() for key, value in backbone.items()}
        weights["score.weight"] = state_dict["score_head.weight"].detach().contiguous().cpu()
        save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})

        config = self.config.__class__.from_dict(self.config.to_dict())
        config.architectures = [class_name]
        config.num_labels = 1
        config.pad_token_id = self.tokenizer.pad_token_id
        config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        heads = {name: state_dict[f"{key}.weight"] for name, key in (("weight", "lm_head"), ("sft_weight", "sft_head"))
                 if f"{key}.weight" in state_dict}
        if heads:
            save_file({k: v.detach().contiguous().cpu().clone() for k, v in heads.items()}, str(directory / LM_HEAD_FILE))
        state = {"consistency_ema": float(self.consistency_ema), "reward_stats": self.reward_stats}
        (directory / ICRM_STATE).write_text(json.dumps(state, indent=2))
        config_out = {"format": "icrm-reward-model", "version": 1, **self.training_config}
        (directory / ICRM_CONFIG).write_text(json.dumps(config_out, indent=2, default=str))


def _linear(weight: torch.Tensor) -> nn.Linear:
    """A bias-free linear layer holding a copy of ``weight`` (``[out, in]``)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype, device=weight.device)
    layer.weight.data.copy_(weight)
    return layer



def is_peft(module: nn.Module) -> bool:
    """Whether a backbone is wrapped by peft (adapters to merge on export)."""
    return hasattr(module, "peft_config") and hasattr(module, "get_base_model")


def add_peft(rm: RewardModel, peft_config) -> RewardModel:
    """Wrap the backbone with peft adapters (e.g. a ``LoraConfig``); the value head stays fully trained.

    The config applies to the backbone alone, so its ``task_type`` is dropped
    and ``modules_to_save`` entries naming a head (``score``, ``classifier``,
    as TRL's docs suggest for a causal LM) are left out: the value head is
    trained fully anyway. The LM head is frozen (it is part of the pretrained
    backbone); the SFT head that training adds beside it is trained fully.
    """
    import dataclasses

    from peft import get_peft_model

    if is_peft(rm.decoder):
        raise ModelError("the backbone already has peft adapters: merge them first or pass no peft_config")
    kept = [m for m in (peft_config.modules_to_save or []) if m not in ("score", "classifier")]
    config = dataclasses.replace(peft_config, task_type=None, modules_to_save=kept or None)
    rm.decoder = get_peft_model(rm.decoder, config)
    if rm.lm_head is not None:
        rm.lm_head.requires_grad_(False)
    rm.score_head.requires_grad_(True)
    return rm


def add_lora(rm: RewardModel, r: int, alpha: int, dropout: float = 0.0) -> RewardModel:
    """LoRA on every linear layer of the backbone (``--lora-r``, at least 1); see :func:`add_peft`."""
    if r <= 0:
        raise UserError(f"--lora-r must be at least 1 to add LoRA, got {r}")
    return add_peft(rm, lora_config(r, alpha, dropout))


def lora_config(r: int, alpha: int, dropout: float = 0.0):
    """The LoRA setup of ``--lora-r/--lora-alpha``: every linear layer of the backbone; None (full
    fine-tuning) when ``r`` is 0, as reward models, DPO and GRPO policies all read it."""
    if r <= 0:
        return None
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear")


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state of a peft-wrapped model as if its adapters were merged, without touching it.

    Each adapter-wrapped layer is copied alone and merged (peft's own merge
    arithmetic), so memory grows by one layer at most and the live model
    keeps training with its adapters. Keys are those of the unwrapped model.
    """
    import copy

    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    base = model.get_base_model()
    state: dict[str, torch.Tensor] = {}
    wrapped: list[str] = []
    for name, module in base.named_modules():
        if any(name.startswith(f"{outer}.") for outer in wrapped):
            continue
        if isinstance(module, BaseTunerLayer):
            layer = copy.deepcopy(module)
            layer.merge()
            plain = layer.get_base_layer()
        elif isinstance(module, AuxiliaryTrainingWrapper):
            plain = copy.deepcopy(module).unload_and_optionally_merge_module(merge=True, safe_merge=False,
                                                                              adapter_names=None)
        else:
            continue
        wrapped.append(name)
        state.update({f"{name}.{key}": value for key, value in plain.state_dict().items()})
    for key, value in base.state_dict().items():
        if not any(key.startswith(f"{outer}.") for outer in wrapped):
            state[key] = value
    return state
