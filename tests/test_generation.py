"""Generation: cache vs recompute, Transformers' ``generate`` outputs, sampling, streaming, errors, CLI.

The Transformers references come from ``tests/fixtures/record_generation_fixtures.py``
(run once with torch + transformers); these tests need neither.
"""
import json
import pathlib

import numpy as np
import pytest
import tf_keras as keras
from typer.testing import CliRunner

from kerasllm.checkpoints import from_pretrained
from kerasllm.cli.main import app
from kerasllm.generation import (
    GenerationConfig,
    TextStreamer,
    generate,
    repetition_penalty,
    runner_for,
    sample_tokens,
    stream,
    top_k_filter,
    top_p_filter,
)
from kerasllm.models import encoder_decoder, get_preset, gpt_decoder, save_pretrained
from kerasllm.tokenizers import BytePairTokenizer

HERE = pathlib.Path(__file__).resolve().parent
TINY_GPT2 = HERE / "fixtures" / "checkpoints" / "tiny_gpt2"
RECORD = HERE / "fixtures" / "generation" / "tiny_gpt2_generate.json"
BPE_DIR = HERE / "fixtures" / "tokenizers" / "bpe"


def gen(model, inputs, **options):
    """``generate`` without XLA unless asked: compiling costs seconds per shape; a few tests cover XLA."""
    options.setdefault("jit_compile", False)
    return generate(model, inputs, **options)


def _tiny_gpt(vocab_size=97, max_position=300, seed=0):
    keras.utils.set_random_seed(seed)
    config = get_preset(
        "gpt-tiny", vocab_size=vocab_size, num_layers=2, hidden_size=32, num_heads=4, max_position=max_position,
        dropout=0.0, attention_dropout=0.0, initializer_range=0.3,
    )
    return gpt_decoder(config)


@pytest.fixture(scope="module")
def tiny():
    return _tiny_gpt()


@pytest.fixture(scope="module")
def record():
    return json.loads(RECORD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def gpt2():
    return from_pretrained(TINY_GPT2)


def _reference_greedy(model, prompt, steps):
    """Greedy decoding with the Keras model's own forward pass over the whole sequence."""
    ids = np.array([prompt])
    for _ in range(steps):
        logits = model({"input_ids": ids, "attention_mask": np.ones_like(ids)}).numpy()
        ids = np.concatenate([ids, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return ids[0, len(prompt):].tolist()


# ------------------------------------------------------------------ cache
def test_cached_greedy_equals_uncached_for_256_tokens(tiny):
    prompt = [5, 17, 42, 8, 63, 21, 9, 4]
    cached = gen(tiny, prompt, max_new_tokens=256, jit_compile=True)
    uncached = gen(tiny, prompt, max_new_tokens=256, use_cache=False)
    assert len(cached.tokens[0]) == 256
    assert cached.tokens == uncached.tokens
    assert len(set(cached.tokens[0])) > 5  # a real continuation, not one token repeated
    assert cached.tokens[0][:24] == _reference_greedy(tiny, prompt, 24)
    without_xla = gen(tiny, prompt, max_new_tokens=256, jit_compile=False)
    assert without_xla.tokens == cached.tokens


def test_decoding_step_is_traced_once(tiny):
    runner = runner_for(tiny)
    for prompts, n in [([[1, 2, 3]], 40), ([[4, 5], [6, 7, 8, 9, 10]], 70), ([[11] * 9] * 3, 5)]:
        gen(tiny, prompts, max_new_tokens=n, jit_compile=False)
        gen(tiny, prompts, max_new_tokens=n, jit_compile=False, decoding="beam", num_beams=2)
    counts = {key: fn.experimental_get_tracing_count() for key, fn in runner._compiled.items()}
    loops = [key for key in counts if key[0][0] in ("loop", "decode", "prefill")]
    assert loops and all(counts[key] == 1 for key in loops), counts


def test_left_padded_batch_generates_what_each_prompt_generates_alone(tiny):
    prompts = [[5, 17, 42, 8, 63, 21], [71, 3], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21], [44]]
    for options in ({}, {"decoding": "beam", "num_beams": 3, "eos_token_id": 7}, {"repetition_penalty": 1.4}):
        batch = gen(tiny, prompts, max_new_tokens=16, **options)
        alone = [gen(tiny, [p], max_new_tokens=16, **options).tokens[0] for p in prompts]
        assert batch.tokens == alone, options
    padded = gen(tiny, prompts, max_new_tokens=16)
    assert padded.sequences.shape == (4, 11 + 16) and padded.prompt_length == 11
    assert padded.sequences[1, :9].tolist() == [0] * 9  # left padding with the model's pad_token_id
    assert padded.sequences[1, 9:11].tolist() == [71, 3]


def test_array_input_with_attention_mask_equals_lists(tiny):
    ids = np.array([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    out = gen(tiny, ids, attention_mask=mask, max_new_tokens=6)
    assert out.tokens == gen(tiny, [[5, 6, 7], [1, 2, 3, 4, 5]], max_new_tokens=6).tokens


# ------------------------------------------------------------------ Transformers references
def _settings(recorded, pad):
    settings = dict(recorded)
    if settings.get("num_beams", 1) > 1:
        settings["decoding"] = "beam"
    return {**settings, "pad_token_id": pad}


@pytest.mark.parametrize(
    "case",
    [
        "greedy_single", "greedy_batch_left_padded", "greedy_batch_eos", "greedy_two_eos",
        "greedy_repetition_penalty", "beam4", "beam3_no_eos", "beam4_length_penalty_2_early",
        "beam3_length_penalty_half_never", "beam2_two_eos", "beam4_repetition_penalty",
    ],
)
def test_matches_transformers_generate(gpt2, record, case):
    recorded = record["cases"][case]
    out = gen(gpt2, recorded["prompts"], **_settings(recorded["settings"], record["pad_token_id"]))
    assert out.tokens == recorded["tokens"]
    if "scores" in recorded:
        np.testing.assert_allclose(out.scores, recorded["scores"], atol=2e-5, rtol=0)


def test_uncached_beam_search_matches_transformers(gpt2, record):
    recorded = record["cases"]["beam4_length_penalty_2_early"]
    settings = _settings(recorded["settings"], record["pad_token_id"])
    out = gen(gpt2, recorded["prompts"], use_cache=False, **settings)
    assert out.tokens == recorded["tokens"]


@pytest.mark.parametrize("case", ["greedy_batch_eos", "beam4"])
def test_matches_transformers_generate_with_xla(gpt2, record, case):
    recorded = record["cases"][case]
    settings = _settings(recorded["settings"], record["pad_token_id"])
    assert gen(gpt2, recorded["prompts"], jit_compile=True, **settings).tokens == recorded["tokens"]


def test_processors_match_transformers(record):
    rec = record["processors"]
    scores = np.array(rec["scores"], np.float32)
    seen = np.zeros(scores.shape, bool)
    for row, ids in enumerate(rec["previous_ids"]):
        seen[row, ids] = True
    np.testing.assert_allclose(repetition_penalty(scores, seen, 1.5).numpy(), rec["repetition_penalty_1.5"], rtol=1e-6)
    for k in (1, 5, 50):
        np.testing.assert_array_equal(top_k_filter(scores, k).numpy(), np.array(rec[f"top_k_{k}"], np.float32))
    for p in (0.1, 0.5, 0.8, 0.95):
        np.testing.assert_array_equal(top_p_filter(scores, p).numpy(), np.array(rec[f"top_p_{p}"], np.float32))


# ------------------------------------------------------------------ sampling
def test_sampling_is_reproducible_and_top_k_1_is_greedy(gpt2):
    prompts = [[5, 17, 42], [71, 3, 90, 8]]
    options = dict(max_new_tokens=20, decoding="sample", temperature=1.5, top_p=0.95)
    first = gen(gpt2, prompts, seed=7, jit_compile=True, **options)
    assert gen(gpt2, prompts, seed=7, **options).tokens == first.tokens  # the same without XLA
    assert gen(gpt2, prompts, seed=8, **options).tokens != first.tokens
    streamed = np.stack(list(stream(gpt2, prompts, seed=7, **options)), axis=1)
    assert streamed.tolist() == first.tokens
    greedy = gen(gpt2, prompts, max_new_tokens=20)
    assert gen(gpt2, prompts, max_new_tokens=20, decoding="sample", top_k=1, seed=3).tokens == greedy.tokens


def test_sampled_frequencies_follow_the_filtered_softmax():
    logits = np.log(np.array([0.05, 0.4, 0.3, 0.15, 0.1], np.float32))
    rows = 40000
    tokens = sample_tokens(np.tile(logits, (rows, 1)), np.array([3, 4], np.int32)).numpy()
    np.testing.assert_allclose(np.bincount(tokens, minlength=5) / rows, np.exp(logits), atol=0.01)
    filtered = top_p_filter(np.tile(logits, (rows, 1)), 0.75).numpy()  # keeps 0.4 + 0.3 + 0.15
    tokens = sample_tokens(filtered, np.array([5, 6], np.int32)).numpy()
    expected = np.array([0, 0.4, 0.3, 0.15, 0]) / 0.85
    np.testing.assert_allclose(np.bincount(tokens, minlength=5) / rows, expected, atol=0.01)


# ------------------------------------------------------------------ encoder-decoder
def test_encoder_decoder_generates_with_the_cache():
    keras.utils.set_random_seed(1)
    config = get_preset(
        "t5-tiny", vocab_size=61, num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64,
        dropout=0.0, attention_dropout=0.0, initializer_range=0.5,
    )
    model = encoder_decoder(config)
    sources = [[5, 6, 7, 8, 9], [10, 11]]
    out = gen(model, sources, max_new_tokens=8)
    assert out.sequences[:, 0].tolist() == [config.pad_token_id] * 2  # the decoder start token
    for row, source in enumerate(sources):  # the functional model, whole decoder sequence every step
        dec = np.array([[config.pad_token_id]])
        enc = np.array([source])
        for _ in range(8):
            logits = model({"encoder_input_ids": enc, "encoder_attention_mask": np.ones_like(enc),
                            "decoder_input_ids": dec, "decoder_attention_mask": np.ones_like(dec)}).numpy()
            dec = np.concatenate([dec, logits[:, -1].argmax(-1)[:, None]], axis=1)
        assert out.tokens[row] == dec[0, 1:].tolist()
    beam = gen(model, sources, max_new_tokens=8, decoding="beam", num_beams=3, eos_token_id=3)
    reference = gen(model, sources, max_new_tokens=8, decoding="beam", num_beams=3, eos_token_id=3, use_cache=False)
    assert beam.tokens == reference.tokens
    np.testing.assert_allclose(beam.scores, reference.scores, atol=1e-5)


# ------------------------------------------------------------------ streaming
def test_text_streamer_writes_the_final_text_piece_by_piece():
    tokenizer = BytePairTokenizer.from_folder(BPE_DIR)
    model = _tiny_gpt(vocab_size=tokenizer.vocab_size, max_position=64, seed=2)
    prompt = [39, 375, 262, 785, 12, 307, 452]  # "Good morrow, my lord" (ids: no tokenizer tracing)
    pieces = []
    streamer = TextStreamer(tokenizer, write=pieces.append, eos_token_id=[])
    out = gen(model, [prompt], max_new_tokens=20, streamer=streamer)  # token ids: no end token, 20 tokens
    assert len(pieces) > 3
    assert "".join(pieces) == streamer.text == tokenizer.decode(out.tokens[0])
    assert out.tokens == gen(model, [prompt], max_new_tokens=20).tokens  # one step per call == 32 per call


def test_text_streamer_holds_back_a_split_character():
    class Bytes:
        def decode(self, ids):
            return bytes(ids).decode("utf-8", errors="replace")

    pieces = []
    streamer = TextStreamer(Bytes(), write=pieces.append)
    for byte in "é!".encode("utf-8"):
        streamer([byte])
    streamer.end()
    assert pieces == ["é", "!"]


# ------------------------------------------------------------------ bad input
def test_prompt_longer_than_the_context_window(tiny):
    short = _tiny_gpt(max_position=16)
    with pytest.raises(ValueError, match=r"prompt 0 has 20 tokens but the model's context window is 16"):
        gen(short, list(range(1, 21)), max_new_tokens=4)
    with pytest.raises(ValueError, match=r"prompt 1 \(10 tokens\) \+ max_new_tokens \(8\) exceeds the context window of 16"):
        gen(short, [[1, 2], list(range(1, 11))], max_new_tokens=8)
    truncated = gen(short, list(range(1, 21)), max_new_tokens=4, truncate=True)
    assert truncated.tokens == gen(short, list(range(9, 21)), max_new_tokens=4).tokens


@pytest.mark.parametrize(
    "inputs, options, message",
    [
        ([], {}, "no prompts given"),
        ([[1, 2], []], {}, "prompt 1 is empty"),
        ([[1, 200]], {}, r"prompt 0 has token id 200, outside the vocabulary \[0, 97\)"),
        ("hello", {}, "text prompts need tokenizer="),
        ([[1]], {"decoding": "nucleus"}, "decoding='nucleus' is unknown; choose one of greedy, sample, beam"),
        ([[1]], {"temperature": 0.7}, "temperature=0.7 only applies to decoding='sample'"),
        ([[1]], {"decoding": "sample", "temperature": 0.0}, "temperature=0.0 must be a number > 0"),
        ([[1]], {"decoding": "sample", "top_p": 1.5}, r"top_p=1.5 must be a number in \(0, 1\]"),
        ([[1]], {"decoding": "sample", "top_k": -1}, "top_k=-1 must be an integer >= 0"),
        ([[1]], {"num_beams": 4}, "num_beams=4 only applies to decoding='beam'"),
        ([[1]], {"decoding": "beam", "num_beams": 1}, "num_beams=1 must be an integer >= 2"),
        ([[1]], {"decoding": "beam", "early_stopping": "sometimes"}, "early_stopping='sometimes' must be True, False"),
        ([[1]], {"max_new_tokens": 0}, "max_new_tokens=0 must be an integer >= 1"),
        ([[1]], {"decoding": "sample", "seed": 2**40}, r"seed=1099511627776 must be an integer in \[-2\*\*31, 2\*\*31\)"),
        ([[1]], {"repetition_penalty": 0}, "repetition_penalty=0 must be a number > 0"),
        ([[1]], {"eos_token_id": 500}, "eos_token_id=500 is outside the model's vocabulary of 97"),
        ([[1]], {"top_q": 0.5}, r"unknown generation option\(s\) \['top_q'\]"),
    ],
)
def test_bad_input_gives_one_clear_message(tiny, inputs, options, message):
    with pytest.raises(ValueError, match=message):
        gen(tiny, inputs, **options)


def test_models_without_a_language_model_head_are_refused():
    from kerasllm.models import bert_encoder

    bert = bert_encoder(get_preset("bert-tiny", vocab_size=50, num_layers=1))
    with pytest.raises(ValueError, match="needs a GPT .* or encoder-decoder model; this one has model_type='bert'"):
        gen(bert, [[1, 2]])
    with pytest.raises(ValueError, match="not beam search"):
        next(stream(_tiny_gpt(max_position=16), [[1, 2]], decoding="beam"))


def test_generation_config_defaults_follow_transformers():
    config = GenerationConfig(decoding="sample")
    assert (config.resolved_top_k(), config.temperature, config.top_p) == (50, None, None)
    assert GenerationConfig(decoding="beam").resolved_num_beams() == 4
    assert GenerationConfig(eos_token_id=(3, 4)).eos_ids() == [3, 4]


# ------------------------------------------------------------------ CLI
cli = CliRunner()


@pytest.fixture(scope="module")
def gpt_folder(tmp_path_factory):
    tokenizer = BytePairTokenizer.from_folder(BPE_DIR)
    model = _tiny_gpt(vocab_size=tokenizer.vocab_size, max_position=48, seed=3)
    folder = tmp_path_factory.mktemp("generate") / "gpt"
    save_pretrained(model, folder)
    tokenizer.save(folder)
    return folder, model, tokenizer


def _cli(*args):
    return cli.invoke(app, ["generate", *map(str, args)], env={"COLUMNS": "200"})


def test_cli_streams_the_same_text_as_the_library(gpt_folder):
    folder, model, tokenizer = gpt_folder
    prompt = "To be, or not to be"
    result = _cli("--model", folder, "--prompt", prompt, "--max-new-tokens", 12, "--no-xla")
    assert result.exit_code == 0, result.output
    expected = gen(model, prompt, max_new_tokens=12, tokenizer=tokenizer).texts[0]
    assert result.stdout == prompt + expected + "\n"
    assert "new tokens in" in result.output

    result = _cli("--model", folder, "--prompt", prompt, "--prompt", "Now", "--max-new-tokens", 6,
                  "--decoding", "beam", "--num-beams", 3, "--no-echo", "--no-xla")
    assert result.exit_code == 0, result.output
    beams = gen(model, [prompt, "Now"], max_new_tokens=6, decoding="beam", num_beams=3, tokenizer=tokenizer)
    assert result.stdout == "".join(text + "\n" for text in beams.texts)


def _cli_error(result):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", ""], "--prompt 1 is empty"),
        (["--prompt", "hi", "--decoding", "topk"], "decoding='topk' is unknown"),
        (["--prompt", "hi", "--top-p", "0.9"], "top_p=0.9 only applies to decoding='sample'"),
        (["--prompt", "hi", "--early-stopping", "maybe"], "--early-stopping 'maybe': choose true, false or never"),
    ],
)
def test_cli_bad_options(gpt_folder, args, message):
    assert message in _cli_error(_cli("--model", gpt_folder[0], *args))


def test_cli_long_prompt_fails_or_is_truncated(gpt_folder):
    folder, model, tokenizer = gpt_folder
    prompt = "word " * 60
    ids = tokenizer.encode(prompt).input_ids
    line = _cli_error(_cli("--model", folder, "--prompt", prompt, "--max-new-tokens", 8))
    assert f"prompt 0 has {len(ids)} tokens but the model's context window is 48" in line
    assert "--truncate" in line
    # --truncate keeps the last 48 - 8 tokens; --stop adds a stop token to the tokenizer's end-of-text
    result = _cli("--model", folder, "--prompt", prompt, "--max-new-tokens", 8, "--truncate", "--no-echo",
                  "--no-xla", "--stop", ".")
    assert result.exit_code == 0, result.output
    expected = gen(model, [ids[-40:]], max_new_tokens=8, tokenizer=tokenizer, eos_token_id=[tokenizer.eos_id, 14])
    assert result.stdout == expected.texts[0] + "\n"


def test_cli_needs_a_tokenizer_beside_the_model(tmp_path):
    result = _cli("--model", TINY_GPT2, "--prompt", "hi")
    assert result.exit_code == 2 and "has no tokenizer: put vocab.json + merges.txt" in result.output


@pytest.mark.parametrize(
    "name", ["kerasllm.generation.config", "kerasllm.generation.processors", "kerasllm.generation.api",
             "kerasllm.generation.streaming"],
)
def test_docstring_examples(name):
    import doctest
    import importlib

    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs=vars(module).copy(), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
