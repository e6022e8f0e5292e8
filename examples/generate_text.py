"""Generate text with a GPT model: greedy, sampling and beam search, batched and streamed.

Run from the repository root:

    python examples/generate_text.py MODEL_DIR ["prompt"]

MODEL_DIR is a kerasllm or Hugging Face GPT-2 folder with its vocab.json + merges.txt
(``kerasllm convert`` writes one). Without arguments the tiny random GPT-2 of the
test fixtures is used with token-id prompts (its output is random, the API is the point).
"""
import sys

from kerasllm.checkpoints import from_pretrained
from kerasllm.generation import GenerationConfig, TextStreamer, generate

if len(sys.argv) > 1:
    from kerasllm.tokenizers import BytePairTokenizer

    model = from_pretrained(sys.argv[1])
    tokenizer = BytePairTokenizer.from_folder(sys.argv[1])
    prompt = sys.argv[2] if len(sys.argv) > 2 else "The meaning of life is"
    print(prompt, end="")
    generate(model, prompt, max_new_tokens=40, tokenizer=tokenizer, streamer=TextStreamer(tokenizer))
    print()
    sampled = generate(model, [prompt, "Once upon a time"], max_new_tokens=30, tokenizer=tokenizer,
                       decoding="sample", temperature=0.8, top_p=0.9, seed=0)
    for text in sampled.texts:
        print("sampled:", repr(text))
    beams = generate(model, prompt, max_new_tokens=20, tokenizer=tokenizer, decoding="beam", num_beams=4)
    print("beam search:", repr(beams.texts[0]), "score", float(beams.scores[0]))
else:
    model = from_pretrained("tests/fixtures/checkpoints/tiny_gpt2")
    prompts = [[5, 17, 42, 8], [71, 3]]  # different lengths: left-padded for you
    print("greedy:", generate(model, prompts, max_new_tokens=10).tokens)
    config = GenerationConfig(max_new_tokens=10, decoding="sample", top_k=20, temperature=0.9, seed=1)
    print("sampled:", generate(model, prompts, config).tokens)
    beams = generate(model, prompts, max_new_tokens=10, decoding="beam", num_beams=4, length_penalty=1.0)
    print("beam search:", beams.tokens, beams.scores)
