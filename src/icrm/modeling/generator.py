"""Generation weights ``w_t = p_gen(tok_{t+1} | tok_{<=t})`` and their disk cache.

The weights depend only on the frozen generator and the tokenized data, so
they are computed once, in a separate no-grad pass batched by length (and
packed, a pair's prompt run once, where the generator's attention allows), and
stored on disk as one flat float16 array of *log*-probabilities plus row
offsets (numpy ``.npy``, memory-mapped on load). Log-probabilities, because a
float16 probability rounds everything below ~6e-8 to 0 while its logarithm
keeps such tokens at a relative precision of ~0.1 % per unit of |log p|. The
cache key is a fingerprint of the generator (of its files, for a local
directory: :func:`files_fingerprint`, so a cache hit never loads the model),
the sampling temperature and top-p, the tokenizer and the token ids
themselves (which already reflect the data, the chat template, the max length
and the truncation), so a re-run or a resumed run reuses it and any change to
those inputs recomputes it. A checksum of the stored array detects a
corrupted or truncated cache, which is then recomputed with a warning.

``temperature`` and ``top_p`` give the probability of the token under the
distribution a sampler with those settings draws from: logits divided by the
temperature, then restricted to the nucleus (transformers' own warpers) and
renormalised; a token outside the nucleus gets 0. The reference uses 0.7 and
0.8 for graded (pointwise) data and the plain distribution for pairs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import RewardCollator, Sequence
from ..errors import UserError
from .gguf import resolve_model
from .loading import load_causal_lm
from .packing import PackedRewardCollator, example_batches, model_inputs, shares_prefix, to_device, use_packed_attention

logger = logging.getLogger(__name__)

CACHE_ENV = "ICRM_CACHE"
FORMAT_VERSION = 3  # 2: log-probabilities, temperature and top-p in the key; 3: generator files in the key
EDGE_BYTES = 2**20  # files_fingerprint hashes this much of each end of a file


class GeneratorError(UserError):
    """A generator that cannot be paired with the reward model."""


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "icrm") / "genprobs"


def check_same_tokenizer(rm_tokenizer, gen_tokenizer, generator: str) -> None:
    """A generator must share the RM's vocabulary, or its probabilities are of other tokens."""
    rm_vocab, gen_vocab = rm_tokenizer.get_vocab(), gen_tokenizer.get_vocab()
    if rm_vocab != gen_vocab:
        differing = len(set(rm_vocab.items()) ^ set(gen_vocab.items()))
        raise GeneratorError(
            f"{generator}: the generator's tokenizer differs from the reward model's "
            f"({len(gen_vocab)} vs {len(rm_vocab)} tokens, {differing} entries differ); "
            "use a generator trained from the same base model"
        )


def load_generator(generator: str | None, rm_tokenizer, trust_remote_code: bool = False, allow_pickle: bool = False):
    """What per-token views need as ``w``: None (none or ``uniform``), ``"self"``, or a frozen causal LM."""
    if generator in (None, "uniform", "self"):
        return "self" if generator == "self" else None
    model, gen_tokenizer = load_causal_lm(generator, trust_remote_code, allow_pickle)
    check_same_tokenizer(rm_tokenizer, gen_tokenizer, generator)
    return model


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Hash of every parameter and buffer of the generator."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def files_fingerprint(directory: Path) -> str:
    """A generator directory's identity, read without loading the model.

    Every file (weights, config, tokenizer, remote code) contributes its name,
    size, modification time and the SHA-256 of its first and last MiB (the
    whole file when smaller). Saving a model writes new files, so a retrained
    or edited generator gets a new key even where its first and last MiB are
    unchanged (e.g. frozen embeddings), while a hit costs milliseconds:
    hashing every byte would take about as long as loading the model.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}:".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(EDGE_BYTES))
            if stat.st_size > EDGE_BYTES:
                handle.seek(max(EDGE_BYTES, stat.st_size - EDGE_BYTES))
                digest.update(handle.read())
    return digest.hexdigest()


def data_fingerprint(tokenizer, sequences: list[Sequence]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    for seq in sequences:
        digest.update(np.asarray(seq.input_ids, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


@torch.no_grad()
def next_token_logprobs(
    model: torch.nn.Module,
    sequences: list[Sequence],
    pad_token_id: int,
    batch_size: int = 16,
    advance: Callable[[int], None] | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    group_size: int = 1,
) -> list[np.ndarray]:
    """``log p(tok_{t+1} | tok_{<=t})`` for every position (-inf at the last), batched by length.

    ``group_size``: consecutive sequences are one example's rows. Where the
    generator's attention can share prefixes (SDPA, which becomes icrm's
    packed attention: :func:`~icrm.modeling.shares_prefix`), batches run
    padding-free with an example's common prefix once, LM head included;
    otherwise padded, each row sorted by its own length.
    """
    device = next(model.parameters()).device
    share = use_packed_attention(model, None) and shares_prefix(model)
    collate = PackedRewardCollator(pad_token_id, share_prefix=share) if share else RewardCollator(pad_token_id)
    group_size = group_size if share else 1
    out: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(sequences)
    model.eval()
    for items, rows in example_batches(sequences, batch_size, group_size):
        batch = collate(items)
        ids = batch["input_ids"].to(device)
        packed = to_device(batch.get("packed"), device)
        if packed is None:
            logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device), use_cache=False).logits
        else:
            logits = model(**model_inputs(packed), use_cache=False).logits[0]
        for row, i in enumerate(rows):
            n = sequences[i].length
            row_logits = logits[row, : n - 1] if packed is None else logits[packed["index"][row, : n - 1]]
            w = np.full(n, -np.inf, dtype=np.float32)
            w[: n - 1] = token_logprobs(row_logits, ids[row, 1:n], temperature, top_p).cpu().numpy()
            out[i] = w
        if advance is not None:
            advance(len(rows))
    return out


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """``[N]`` log-probabilities of ``targets`` under ``[N, V]`` logits, as a sampler sees them.

    One row of logits is taken to float32 at a time by the caller (a whole
    batch of a 150k-vocab model in float32 would take gigabytes).
    """
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    scores = logits.float()
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.log_softmax(scores, dim=-1).gather(-1, targets[:, None]).squeeze(-1)


@torch.no_grad()
def head_generation_weights(
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    head_weight: torch.Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """``[N, L]`` weights ``w_t = p(tok_{t+1} | tok_{<=t})`` read by an LM head from hidden states.

    What ``--generator self`` uses: no second model, the RM's own states
    through a frozen head. Only positions whose next token is a response
    token are computed; the rest are 0.
    """
    pairs = response_mask[:, :-1].bool() & response_mask[:, 1:].bool()
    logits = torch.nn.functional.linear(hidden[:, :-1][pairs].detach(), head_weight)
    weights = torch.zeros(response_mask.shape, dtype=torch.float32, device=hidden.device)
    weights[:, :-1][pairs] = token_logprobs(logits, input_ids[:, 1:][pairs], temperature, top_p).exp()
    return weights


@dataclass
class GenerationWeights:
    """Memory-mapped per-sequence weights, indexed like the sequence list."""

    flat: np.ndarray  # float16 log-probabilities
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        """Probabilities ``w_t`` of sequence ``index`` (float32)."""
        return np.exp(self.flat[self.offsets[index] : self.offsets[index + 1]].astype(np.float32))


def _checksum(flat: np.ndarray, offsets: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(flat).tobytes())
    digest.update(np.ascontiguousarray(offsets).tobytes())
    return digest.hexdigest()


def _read_cache(entry: Path, key: str) -> GenerationWeights | None:
    meta_file = entry / "meta.json"
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        flat = np.load(entry / "probs.npy", mmap_mode="r")
        offsets = np.load(entry / "offsets.npy")
        valid = meta.get("key") == key and meta.get("checksum") == _checksum(flat, offsets)
    except (OSError, ValueError, json.JSONDecodeError):
        valid = False
    if not valid:
        logger.warning("generator cache at %s is corrupted or stale; recomputing", entry)
        return None
    return GenerationWeights(flat, offsets)


def _write_cache(entry: Path, key: str, rows: list[np.ndarray], meta: dict) -> GenerationWeights:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    flat = np.concatenate(rows).astype(np.float16) if rows else np.zeros(0, dtype=np.float16)
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
    np.save(staging / "probs.npy", flat)
    np.save(staging / "offsets.npy", offsets)
    full_meta = {**meta, "key": key, "checksum": _checksum(flat, offsets), "version": FORMAT_VERSION}
    (staging / "meta.json").write_text(json.dumps(full_meta, indent=2))
    if entry.exists():
        shutil.rmtree(entry)
    staging.rename(entry)
    return GenerationWeights(np.load(entry / "probs.npy", mmap_mode="r"), offsets)


def cached_generation_weights(
    generator: str,
    tokenizer,
    sequences: list[Sequence],
    *,
    cache_dir: Path | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress_factory=None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    group_size: int = 1,
) -> tuple[GenerationWeights, bool]:
    """Weights for ``sequences`` under the generator at ``generator``; reuses the cache.

    ``group_size``: consecutive sequences are one example's rows (they may
    share a prefix, computed once; the weights do not depend on it).

    Returns the weights and whether they came from the cache. A local
    generator directory is keyed by its files, so a hit loads nothing (the
    tokenizer check passed when the entry was written: the key holds both
    vocabularies); a hub id is loaded and keyed by its weights.
    """
    model = None
    generator = resolve_model(generator)  # a GGUF generator is keyed by its converted folder
    if Path(generator).is_dir():
        generator_key = files_fingerprint(Path(generator))
    else:
        model = load_generator(generator, tokenizer, trust_remote_code, allow_pickle)
        generator_key = weights_fingerprint(model)
    key = hashlib.sha256(
        f"{FORMAT_VERSION}:{generator_key}:{temperature!r}:{top_p!r}:"
        f"{data_fingerprint(tokenizer, sequences)}".encode()
    ).hexdigest()
    entry = (cache_dir or default_cache_dir()) / key[:32]
    found = _read_cache(entry, key)
    if found is not None and len(found) == len(sequences):
        return found, True
    if model is None:
        model = load_generator(generator, tokenizer, trust_remote_code, allow_pickle)
    model.to(device)
    advance = None
    if progress_factory is not None:
        advance = progress_factory("generator pass", len(sequences))
    rows = next_token_logprobs(model, sequences, tokenizer.pad_token_id, batch_size, advance, temperature, top_p,
                               group_size)
    meta = {
        "generator": str(generator),
        "temperature": temperature,
        "top_p": top_p,
        "sequences": len(sequences),
        "tokens": int(sum(len(r) for r in rows)),
    }
    return _write_cache(entry, key, rows, meta), False
