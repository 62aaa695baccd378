"""Loading pretrained backbones and tokenizers, and making the two agree.

Every model icrm reads (a reward model, a generator, a policy) starts here: a
missing local path fails at once with a suggestion instead of after the hub's
retries, pickle-only weights are refused unless allowed, and the tokenizer
gets a pad token distinct from EOS and a chat template where it lacks them.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from ..errors import UserError
from ..outputs import library_bars_off
from .gguf import resolve_model
from .presets import CHAT_TEMPLATE

PAD_TOKEN = "<|pad|>"
HUB_ID = re.compile(r"\w[\w.-]*(/\w[\w.-]*)?")  # "name" or "namespace/name"


class ModelError(UserError):
    """A model path or checkpoint that cannot be used as asked."""


def prepare_tokenizer(tokenizer) -> bool:
    """Give the tokenizer a pad token distinct from EOS and a chat template.

    HF sequence classifiers find the last token by searching for
    ``pad_token_id``; with pad == EOS they would read the token before EOS.
    An unknown-token that is neither EOS nor BOS (SmolLM2's ``<|endoftext|>``)
    becomes the pad token as it is: a byte-level vocabulary never emits it, and
    the vocabulary, the embeddings and a generator's token ids stay the model's.
    Otherwise a pad token is added. Returns True when one was (the embeddings must grow).
    """
    added = False
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        unk = tokenizer.unk_token_id
        if unk is not None and unk not in (tokenizer.eos_token_id, tokenizer.bos_token_id):
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
            added = True
    if not tokenizer.chat_template:
        eos = tokenizer.eos_token or ""
        tokenizer.chat_template = CHAT_TEMPLATE.replace("<|end|>", eos)
    tokenizer.padding_side = "right"
    return added


def fit_tokenizer(model, tokenizer) -> None:
    """Prepare the tokenizer (:func:`prepare_tokenizer`) and make the model agree with it."""
    if prepare_tokenizer(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id


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


def require_safetensors(path: str, allow_pickle: bool) -> None:
    """Refuse local checkpoints that only have pickle weights (unsafe to load)."""
    local = Path(path)
    if not local.is_dir() or allow_pickle:
        return
    if not any(local.glob("*.safetensors")) and any(local.glob("*.bin")):
        raise ModelError(f"{path}: only pickle (.bin) weights found; pass --allow-pickle to load them anyway")


def load_tokenizer(path: str, trust_remote_code: bool = False, revision: str | None = None):
    """The tokenizer of a local directory, hub id, GGUF file or GGUF preset (every model loader starts here).

    A missing local path is reported as such (:func:`check_model_path`), not
    after the hub's retries or as its complaint about an invalid repo id.
    """
    from huggingface_hub import is_offline_mode
    from transformers import AutoTokenizer

    path = resolve_model(path)
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


def load_causal_lm(
    path: str, trust_remote_code: bool = False, allow_pickle: bool = False, tokenizer=None, **model_kwargs
):
    """A pretrained causal LM and its prepared tokenizer (the saved one unless given), from a path, hub id or GGUF.

    ``model_kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` (``dtype``,
    ``revision``, ``attn_implementation``...); ``revision`` also picks the tokenizer's.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model(path)
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
