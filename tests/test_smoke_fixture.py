def test_fixture_loads(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    m = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    t = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert m.config.eos_token_id == t.eos_token_id
