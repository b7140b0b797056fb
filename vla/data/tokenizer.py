"""PaliGemma SentencePiece prompt tokenizer, exactly as openpi's `PaligemmaTokenizer` (src/openpi/models/tokenizer.py).

Two prompt formats:
  * Pi0 (and Pi0.5 with `discrete_state=False`):  BOS + pieces(cleaned) + pieces("\n")
  * Pi0.5 with discrete state:  BOS + pieces(f"Task: {cleaned}, State: {s0 s1 ...};\nAction: ")
Right-padded with id 0 to `max_len`; mask True on real tokens; too-long prompts are truncated with a warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import sentencepiece

log = logging.getLogger(__name__)

PAD_ID = 0


def clean_prompt(prompt: str) -> str:
    # openpi: strip, underscores to spaces, newlines to spaces; no lower-casing for Pi0/Pi0.5.
    return prompt.strip().replace("_", " ").replace("\n", " ")


def discretize_state(state: np.ndarray) -> np.ndarray:
    """256 bins over [-1, 1]; values below -1 give -1 (openpi's tokenizer does not clip)."""
    bins = np.linspace(-1.0, 1.0, 256 + 1)[:-1]
    return np.digitize(state, bins=bins) - 1


class PromptTokenizer:
    def __init__(self, model_path: str | Path, max_len: int, discrete_state: bool = False):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"tokenizer model not found: {model_path} (expected a SentencePiece .model file)")
        self.model_path = model_path
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
        self.max_len = max_len
        self.discrete_state = discrete_state
        self.num_truncated = 0

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, prompt: str, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Returns (tokens int32 [max_len], mask bool [max_len]). `state` is the *normalized*, unpadded state."""
        cleaned = clean_prompt(prompt)
        if self.discrete_state:
            if state is None:
                raise ValueError("discrete_state=True needs the normalized state to build the Pi0.5 prompt")
            digits = " ".join(map(str, discretize_state(np.asarray(state)).tolist()))
            ids = self.sp.encode(f"Task: {cleaned}, State: {digits};\nAction: ", add_bos=True)
        else:
            ids = self.sp.encode(cleaned, add_bos=True) + self.sp.encode("\n")
        n = len(ids)
        if n > self.max_len:
            if not self.num_truncated:  # once per tokenizer (per DataLoader worker), not once per sample
                log.warning("prompt of %d tokens truncated to max_len=%d (further truncations not reported): %r",
                            n, self.max_len, cleaned)
            self.num_truncated += 1
            ids, n = ids[: self.max_len], self.max_len
        tokens = np.full(self.max_len, PAD_ID, dtype=np.int32)
        tokens[:n] = ids
        mask = np.zeros(self.max_len, dtype=bool)
        mask[:n] = True
        return tokens, mask


def train_tiny_tokenizer(out_path: str | Path, prompts: list[str], vocab_size: int = 512) -> Path:
    """Train a small SentencePiece model with PaliGemma's special ids (pad 0, eos 1, bos 2, unk 3).

    For tests and the CPU default only: real runs use the PaliGemma tokenizer file (`model.tokenizer=`).
    The corpus covers both prompt formats, so state digits and the "Task:/State:/Action:" scaffold tokenize compactly.
    """
    import io

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for p in prompts:
        lines.append(clean_prompt(p))
        for k in range(0, 256, 7):
            lines.append(f"Task: {clean_prompt(p)}, State: {k} {255 - k} {(k * 3) % 256} -1;\nAction: ")
    lines += [" ".join(str(i) for i in range(j, j + 16)) for j in range(-1, 256, 16)]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 4),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=False,
        remove_extra_whitespaces=False,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")  # ranks may train it at once
    tmp.write_bytes(model.getvalue())
    tmp.replace(out_path)
    return out_path


def task_prompts() -> list[str]:
    """The distinct prompts of the task configs (conf/task/*.yaml), in file-name order. A variant that takes its
    prompt from the task it extends (pickcube_wristcam.yaml) adds nothing, so the tiny tokenizer stays the same; nor
    does a task whose prompts come from its simulator (LIBERO: prompt null)."""
    from vla.configs import group_options, load_group  # the config system sits above the data code

    prompts = (load_group("task", name).prompt for name in group_options("task"))
    return list(dict.fromkeys(p for p in prompts if p is not None))


def resolve_tokenizer(path: str | Path | None, cache_dir: str | Path | None = None) -> Path:
    """The SentencePiece model to use: `path` if given (model.tokenizer=...), else the tiny tokenizer trained on the
    prompts of all task configs (deterministic, 30 ms), cached under `cache_dir` (default ~/.cache/vla) by content."""
    import hashlib

    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model not found: {path} (expected a SentencePiece .model file)")
        return path
    prompts = task_prompts()
    key = hashlib.sha1("\n".join(prompts).encode()).hexdigest()[:12]
    cache_dir = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "vla"
    out = cache_dir / f"tiny_tokenizer_{key}.model"
    return out if out.is_file() else train_tiny_tokenizer(out, prompts)
