"""Prompt tokenizer: both openpi formats and its state discretization (src/openpi/models/tokenizer.py), padding,
truncation."""

import logging

import numpy as np
import pytest

from vla.data.tokenizer import PromptTokenizer, discretize_state, train_tiny_tokenizer

PROMPT = "Push and move a cube to a goal region in front of it."


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tiny.model", [PROMPT, "Pick up the red_cube."])


def test_discretize_state_reference():
    # digitize(x, linspace(-1, 1, 257)[:-1]) - 1: -1 -> 0, >= 0.9921875 -> 255, below -1 -> -1 (no clipping)
    out = discretize_state(np.array([-1.0, -0.99, 0.0, 0.9921875, 1.0, 1.7, -1.2]))
    assert out.tolist() == [0, 1, 128, 255, 255, 255, -1]


def test_pi0_format_is_bos_prompt_then_newline(sp_model):
    tok = PromptTokenizer(sp_model, max_len=40)
    sp = tok.sp
    tokens, mask = tok.encode("  Pick up the red_cube.\n")
    expected = sp.encode("Pick up the red cube.", add_bos=True) + sp.encode("\n")  # cleaned: strip, '_'->' ', no lower
    assert expected[0] == 2 and sp.pad_id() == 0
    n = len(expected)
    assert tokens[:n].tolist() == expected and mask[:n].all()
    assert (tokens[n:] == 0).all() and not mask[n:].any()
    assert tokens.dtype == np.int32 and tokens.shape == mask.shape == (40,)


def test_pi05_discrete_state_format(sp_model):
    tok = PromptTokenizer(sp_model, max_len=200, discrete_state=True)
    state = np.array([-1.0, 0.0, 0.5, 2.0])
    tokens, mask = tok.encode(PROMPT, state)
    expected = tok.sp.encode(f"Task: {PROMPT}, State: 0 128 192 255;\nAction: ", add_bos=True)
    assert tokens[: mask.sum()].tolist() == expected
    with pytest.raises(ValueError, match="needs the normalized state"):
        tok.encode(PROMPT)


def test_truncation_warns(sp_model, caplog):
    tok = PromptTokenizer(sp_model, max_len=5)
    with caplog.at_level(logging.WARNING):
        tokens, mask = tok.encode(PROMPT)
    assert mask.all() and len(tokens) == 5 and "truncated" in caplog.text


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer model not found"):
        PromptTokenizer(tmp_path / "nope.model", max_len=8)


def test_task_prompts_cover_every_task_config_once_including_variants():
    # a variant (pickcube_wristcam.yaml) has no prompt of its own: it takes its base's, and must neither break the
    # prompt list nor add a duplicate that would change the tiny tokenizer
    from vla.configs import group_options, load_group
    from vla.data.tokenizer import task_prompts

    prompts = task_prompts()
    names = group_options("task")
    assert "pickcube_wristcam" in names
    assert len(prompts) == len(set(prompts))
    assert {load_group("task", n).prompt for n in names} - {None} == set(prompts)  # LIBERO's come from LIBERO
    assert load_group("task", "pickcube_wristcam").prompt == load_group("task", "pickcube").prompt
