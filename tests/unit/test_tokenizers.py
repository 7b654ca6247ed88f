"""`up` refuses a teacher whose tokenizer is not the student's, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from online_distill.cli.main import main
from online_distill.config import ConfigError, load_config
from online_distill.models.loader import load_tokenizer
from online_distill.models.tokenizers import check_shared_tokenizer, tokenizer_mismatch
from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR


def word_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer of 7 tokens, saved in Hugging Face format."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "1": 4, "+": 5, "=": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(folder))
    return folder


def test_the_demo_pair_shares_one_tokenizer() -> None:
    assert tokenizer_mismatch(load_tokenizer(DEMO_TEACHER_DIR),
                              load_tokenizer(DEMO_STUDENT_DIR)) is None
    check_shared_tokenizer(load_config("deploy/demo.yaml"))


def test_a_different_vocabulary_is_named(tmp_path: Path) -> None:
    why = tokenizer_mismatch(load_tokenizer(word_tokenizer(tmp_path)),
                             load_tokenizer(DEMO_STUDENT_DIR))
    assert why is not None and "has 7 tokens" in why


@pytest.mark.parametrize("backend", ["hf", "openai"])
def test_up_refuses_a_teacher_with_another_tokenizer(backend: str, tmp_path: Path,
                                                     capsys) -> None:
    other = str(word_tokenizer(tmp_path / "tok"))
    field = "teacher.model" if backend == "hf" else "teacher.tokenizer"
    served = [] if backend == "hf" else ["teacher.model=served-name",
                                         "teacher.base_url=http://127.0.0.1:1/v1"]
    rc = main(["up", "--file", "deploy/demo.yaml", "--duration", "1", f"run_dir={tmp_path}",
               f"teacher.backend={backend}", f"{field}={other}", *served])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"configuration error: {field} = " in err and "share one tokenizer" in err
    assert "Traceback" not in err
    with pytest.raises(ConfigError):
        check_shared_tokenizer(load_config("deploy/demo.yaml", [f"teacher.backend={backend}",
                                                                 f"{field}={other}", *served]))
