"""--pad_vocab: the embedding padded to a multiple of 128 rows while training, the padded rows
never predicted (the loss, logits and real rows' gradients are the unpadded model's) and never
saved (every folder is plain GPT-2 at the tokenizer's size), a resume exact either way."""
import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from londonlm.core import UsageError
from londonlm.training.model import ModelShape, build_model, prepare_for_training
from londonlm.training.speed.settings import MachineBf16, SpeedSettings, fixed_rules
from londonlm.training.step.fused_loss import enable_fused_loss
from londonlm.training.step.vocab_padding import (fit_optimizer_rows, pad_vocabulary, padded_vocab, real_rows,
                                                  unpadded_state_dict)

V = 300  # not a multiple of 128: 384 rows padded


def _model(seed=0, vocab=V):
    return build_model(ModelShape(2, 2, 32, 16, vocab), 0, 0, 0, seed=seed)


def _batch(vocab=V, seed=1):
    return torch.randint(0, vocab, (3, 16), generator=torch.Generator().manual_seed(seed))


def test_padded_rows_arithmetic():
    assert [padded_vocab(n) for n in (1, 128, 129, 30000, 50257)] == [128, 128, 256, 30080, 50304]


def test_padded_model_gives_the_unpadded_loss_logits_and_real_gradients():
    plain = _model()
    padded = pad_vocabulary(copy.deepcopy(plain))
    emb = padded.transformer.wte.weight
    assert emb.shape == (384, 32) and padded.lm_head.weight is emb and padded.config.vocab_size == V
    assert real_rows(padded) == V and real_rows(plain) is None
    assert torch.count_nonzero(emb[V:]) == 0
    x = _batch()
    a, b = plain(input_ids=x, labels=x), padded(input_ids=x, labels=x)
    assert b.logits.shape == a.logits.shape == (3, 16, V)  # the padded columns never predicted
    assert torch.allclose(a.logits, b.logits, atol=1e-6) and abs(a.loss.item() - b.loss.item()) < 1e-6
    a.loss.backward()
    b.loss.backward()
    assert torch.count_nonzero(emb.grad[V:]) == 0
    for (name, p), q in zip(plain.named_parameters(), padded.parameters()):
        assert torch.allclose(p.grad, q.grad[:V] if name == "transformer.wte.weight" else q.grad,
                              atol=1e-6, rtol=1e-5), name


def test_padding_is_a_no_op_where_the_rows_are_a_multiple_already():
    m = _model(vocab=256)
    assert pad_vocabulary(m) is m and real_rows(m) is None and m.transformer.wte.weight.shape[0] == 256


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_fused_loss_on_a_padded_head_is_the_unpadded_stock_loss(dtype):
    """The fused loss computes logits over every row of the (padded) head; the padded ones get
    probability 0: the same loss and real gradients as the stock loss of the unpadded model."""
    plain = _model()
    fused = enable_fused_loss(pad_vocabulary(copy.deepcopy(plain)), chunk_rows=7)
    x = _batch()
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        a, b = plain(input_ids=x, labels=x), fused(input_ids=x, labels=x)
    tol = 1e-6 if dtype is None else 2e-2
    assert abs(a.loss.item() - b.loss.item()) <= tol
    a.loss.backward()
    b.loss.backward()
    g_plain, g_fused = plain.transformer.wte.weight.grad, fused.transformer.wte.weight.grad
    assert torch.count_nonzero(g_fused[V:]) == 0
    assert torch.allclose(g_plain, g_fused[:V], atol=1e-6 if dtype is None else 2e-3, rtol=1e-4 if dtype is None else 5e-2)


def _trainer(model, tmp_path, tok=None):
    from conftest import micro_lm_dataset, micro_training_args
    from londonlm.training.step.trainer import RunTrainer

    return RunTrainer(model=model, args=micro_training_args(tmp_path / "run"), processing_class=tok,
                      train_dataset=micro_lm_dataset(8, vocab=V))


def test_a_padded_model_saves_plain_gpt2_at_the_tokenizers_size(tmp_path):
    """Training pads (faster matmuls on a GPU); what it saves (checkpoints, final/, best/: all
    through the Trainer's save) is a stock GPT-2 folder with the tokenizer's rows, loading with
    AutoModelForCausalLM as is and giving the trained model's logits; its head still tied."""
    from transformers import AutoTokenizer

    from conftest import SAMPLE_TEXTS
    from londonlm.tokens.tokenizer import save_tokenizer, train_bpe
    from londonlm.training.record import save_model_folder

    save_tokenizer(train_bpe(SAMPLE_TEXTS * 20, vocab_size=300, show_progress=False), tmp_path / "tok",
                   model_max_length=16)
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    n = len(tok)
    assert n % 128  # padding has rows to add
    trained = build_model(ModelShape(2, 2, 32, 16, n), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id,
                          seed=0)
    prepare_for_training(trained, SpeedSettings("fp32", "sdpa", False, True))
    assert trained.transformer.wte.weight.shape[0] == padded_vocab(n) > n
    with torch.no_grad():  # as if trained: the real rows moved, the padded ones stayed zero
        trained.transformer.wte.weight[:n] += 0.01
    save_model_folder(_trainer(trained, tmp_path, tok), tmp_path / "final", tok)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "final").eval()
    assert type(plain).__name__ == "GPT2LMHeadModel" and plain.config.model_type == "gpt2"
    assert plain.config.vocab_size == n == plain.transformer.wte.weight.shape[0] == plain.lm_head.weight.shape[0]
    assert plain.lm_head.weight.data_ptr() == plain.transformer.wte.weight.data_ptr()
    ids = torch.tensor([tok("Up betimes, and to the Office")["input_ids"][:16]])
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, trained.eval()(ids).logits)
    assert trained.transformer.wte.weight.shape[0] == padded_vocab(n)  # the training model unchanged


def test_saved_weights_load_back_into_the_padded_model_with_zero_rows(tmp_path):
    """A resume (or the best model loaded at the end) loads the unpadded weights into the
    padded model: its padded rows come back as the zeros they were."""
    trained = pad_vocabulary(_model(seed=0))
    with torch.no_grad():
        trained.transformer.wte.weight[:V] += 0.01
    saved = unpadded_state_dict(trained, trained.state_dict())
    assert saved["transformer.wte.weight"].shape == (V, 32)
    fresh = pad_vocabulary(_model(seed=5))
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.transformer.wte.weight, trained.transformer.wte.weight)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    assert unpadded_state_dict(_model(), {"x": torch.zeros(1)}) == {"x": torch.zeros(1)}  # unpadded: as is


def _adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


def _steps(model, opt, n=3):
    for i in range(n):
        x = _batch(seed=10 + i)
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()


def test_adamw_keeps_padded_rows_zero_and_moments_move_between_settings():
    """The padded rows' gradient is zero, so AdamW (decay included) leaves them zero and their
    moments zero: a checkpoint's optimizer state cut to, or padded from, the real rows is
    exact, and a run resumed with the other --pad_vocab setting goes on as the same run."""
    padded = pad_vocabulary(_model())
    opt = _adamw(padded)
    _steps(padded, opt)
    emb = padded.transformer.wte.weight
    assert torch.count_nonzero(emb[V:]) == 0
    state = opt.state_dict()
    assert torch.count_nonzero(state["state"][0]["exp_avg"][V:]) == 0

    plain = _model()  # resumed unpadded from the padded run's checkpoint
    plain.load_state_dict(unpadded_state_dict(padded, padded.state_dict()))
    plain_opt = _adamw(plain)
    fit_optimizer_rows(plain_opt, plain)
    plain_opt.load_state_dict(copy.deepcopy(state))
    assert plain_opt.state[plain.transformer.wte.weight]["exp_avg"].shape == (V, 32)
    again = pad_vocabulary(_model(seed=3))  # and padded again from the unpadded one's
    again.load_state_dict(plain.state_dict())
    again_opt = _adamw(again)
    fit_optimizer_rows(again_opt, again)
    _steps(plain, plain_opt, 2)
    again_opt.load_state_dict(copy.deepcopy(state))
    _steps(again, again_opt, 2)
    _steps(padded, opt, 2)
    assert torch.allclose(plain.transformer.wte.weight, emb[:V], atol=1e-6)
    assert torch.allclose(again.transformer.wte.weight, emb, atol=1e-6)


def test_pad_vocab_is_a_speed_setting_asked_or_chosen():
    from londonlm.training.flags import SpeedArguments
    from londonlm.training.speed.probe import candidates

    assert SpeedSettings.from_flags(pad_vocab="on").pad_vocab is True
    assert SpeedSettings.from_flags(pad_vocab="off").pad_vocab is False
    assert SpeedSettings.from_flags().pad_vocab is None
    with pytest.raises(UsageError, match="--pad_vocab"):
        SpeedArguments(pad_vocab="yes")
    cuda, cpu = {"device": "cuda"}, {"device": "cpu"}
    assert fixed_rules(cuda, MachineBf16(False, False, True)).pad_vocab is True  # auto: on for CUDA
    assert fixed_rules(cpu, MachineBf16(True, True, False)).pad_vocab is False   # off on CPUs
    # never probed: every candidate carries the fixed rules' (or the flags') padding
    space = {"precision": ["fp32"], "attn_implementation": ["sdpa", "eager"], "fused_loss": [False, True]}
    assert {c.pad_vocab for c in candidates(space, SpeedSettings(), SpeedSettings("fp32", "sdpa", False, True))} == {True}
    assert SpeedSettings("fp32", "sdpa", False, True).label != SpeedSettings("fp32", "sdpa", False, False).label
    assert SpeedSettings("fp32", "sdpa", False, False).label == "fp32/sdpa/fused-off"  # cached figures keep their key
    assert SpeedSettings("fp32", "sdpa", False).probed_given and not SpeedSettings("fp32", "sdpa", False).complete


# --------------------------------------------------------------------------- the training command

@pytest.fixture
def root300(micro_root, tmp_path):
    """The micro project with a 300-token tokenizer (the micro one has 512 = 4 x 128 rows)."""
    import shutil

    from londonlm.tokens.stage import train_tokenizer_stage

    root = tmp_path / "root"
    shutil.copytree(micro_root, root)
    data, tok = root / "data" / "london_historical", root / "09_models" / "tokenizers" / "london_historical_bpe"
    shutil.rmtree(tok)
    train_tokenizer_stage(data / "processed", tok, vocab_size=300, min_frequency=2, era_tokens=True,
                          model_max_length=64, log=lambda *_: None)
    return root


def _losses(ckpt):
    import json

    st = json.loads((ckpt / "trainer_state.json").read_text())
    return [h["loss"] for h in st["log_history"] if "loss" in h]


@pytest.mark.slow
def test_training_padded_resumes_exactly_and_saves_the_tokenizers_size(root300):
    """The training command with --pad_vocab on: a run stopped at step 4 and resumed replays the
    uninterrupted one, also when resumed with --pad_vocab off (the checkpoint holds no padding;
    the optimizer's moments are fitted); every folder it wrote loads as plain GPT-2 with the
    tokenizer's rows, and the settings it chose are recorded."""
    import json

    from transformers import AutoTokenizer

    from conftest import train_exit_code

    def run_dir(name):
        return root300 / "09_models" / "checkpoints" / name

    common = ["--max_steps", "8", "--logging_steps", "1", "--save_steps", "4", "--eval_steps", "100",
              "--bf16", "false", "--autotune", "off"]
    assert train_exit_code(root300, *common, "--pad_vocab", "on", "--run_name_dir", "a") == 0
    for name, then in (("b", "on"), ("c", "off")):
        assert train_exit_code(root300, *common, "--pad_vocab", "on", "--run_name_dir", name,
                               "--stop_after_steps", "4") == 0
        assert train_exit_code(root300, *common, "--pad_vocab", then, "--run_name_dir", name) == 0
        whole, resumed = _losses(run_dir("a") / "checkpoint-8"), _losses(run_dir(name) / "checkpoint-8")
        assert len(whole) == len(resumed) == 8
        assert max(abs(x - y) for x, y in zip(whole, resumed)) <= 1e-5, (name, whole, resumed)
    n = len(AutoTokenizer.from_pretrained(root300 / "09_models" / "tokenizers" / "london_historical_bpe"))
    assert n % 128
    for folder in (run_dir("a") / "final", run_dir("a") / "checkpoint-4", run_dir("c") / "checkpoint-4"):
        m = AutoModelForCausalLM.from_pretrained(folder)
        assert m.config.vocab_size == n == m.transformer.wte.weight.shape[0], folder
    info = json.loads((run_dir("a") / "run_info.json").read_text())
    assert info["pad_vocab"] is True and info["shape"]["embedding_rows"] == n
    chosen = json.loads((run_dir("a") / "training_config.json").read_text())["speed"]["chosen"]
    assert chosen["pad_vocab"] is True
    assert json.loads((run_dir("c") / "run_info.json").read_text())["pad_vocab"] is False
