"""SALMONN's three-stage curriculum (mowe.salmonn.stages) and its prompt format (mowe.salmonn.prompt)."""

from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import train_bpe_tokenizer
from mowe.salmonn import SALMONN_PRETRAIN_TASKS, salmonn
from mowe.salmonn.prompt import PROMPT_TEMPLATE
from mowe.salmonn.stages import salmonn_stages


def test_salmonn_stages_shape():
    p, i, a = salmonn_stages((10, 20, 3), pretrain_tasks=SALMONN_PRETRAIN_TASKS)
    assert set(p.tasks) == {"asr", "sound_event"} and i.tasks is None and a.steps == 3
    assert salmonn_stages(3)[0].tasks is None  # no task list given: all data
    assert a.lora_scale is not None and a.lora_scale < 1
    assert all(set(s.train) == {"connector", "lora"} for s in (p, i, a))


def test_salmonn_prompt_puts_the_audio_inside_speech_tags():
    assert salmonn().prompt_template == PROMPT_TEMPLATE
    tok = train_bpe_tokenizer(["what is said"] * 4, vocab_size=300)
    proc = MoWEProcessor(tok, prompt_template=PROMPT_TEMPLATE)
    expected = "<|bos|>USER: <Speech><|audio|></Speech> What is said?\nASSISTANT:"
    assert proc.build_prompt("What is said?") == expected
