"""Generation speed: cached vs uncached decoding, XLA on/off, and kerasllm vs Transformers ``generate``.

    /work/venv/bin/python bench/generate_bench.py [--new-tokens 256] [--hf-new-tokens 32]
        [--repeats 3] [--ref-python /work/refvenv/bin/python] [--skip-hf]

1. **Cache**: a random ``gpt-tiny``-shaped model (4 layers, hidden 256, 4 heads,
   vocabulary 4,000, 512 positions) greedily continues a 32-token prompt by
   ``--new-tokens`` tokens with the fixed-size key/value cache and without it
   (the whole sequence recomputed at every step); both outputs must agree token
   for token. Prints both times and the speed-up.
2. **XLA**: the same cached generation with the decoding step compiled by XLA
   (``jit_compile=True``) and without it.
3. **Transformers**: a random GPT-2-small-shaped ``GPT2LMHeadModel`` (12 layers,
   hidden 768, 12 heads, vocabulary 50,257, 1,024 positions) is written as
   safetensors by Transformers and loaded by kerasllm's ``from_pretrained``, so
   both run the same weights. Greedy generation of ``--hf-new-tokens`` tokens
   after 32-token prompts at batch 1 and 8: tokens/s of kerasllm (TensorFlow,
   cache, compiled step) and of Transformers' PyTorch ``generate`` (its dynamic
   cache, eager PyTorch, the faster of ``torch.set_num_threads(1)`` and ``(2)``),
   and their ratio. The anchor runs in ``--ref-python`` (a venv with torch +
   transformers) when this interpreter cannot import them; timings are taken
   inside that process after a warm-up call. The two sides alternate
   ``--repeats`` times and each keeps its best time, which damps the noise of a
   shared machine.

Every time includes the prompt's prefill; each side is warmed up first (tracing,
XLA compilation, PyTorch's first-call setup are not counted; kerasllm's first call,
with them, is shown apart).
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PROMPT_LENGTH = 32
TINY = dict(num_layers=4, hidden_size=256, num_heads=4, vocab_size=4000, max_position=512)

_REF_SNIPPET = r"""
import json, sys, time
import torch
import transformers
transformers.logging.set_verbosity_error()
from transformers import GPT2Config, GPT2LMHeadModel

command, folder = sys.argv[1], sys.argv[2]
if command == "write":
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024))
    model.save_pretrained(folder, safe_serialization=True)
    print(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__}))
    sys.exit(0)
job = json.loads(sys.argv[3])
model = GPT2LMHeadModel.from_pretrained(folder).eval()
model.generation_config.eos_token_id = None
results = {}
for batch, prompts in job["prompts"].items():
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)
    def run(n):
        with torch.no_grad():
            return model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, num_beams=1,
                                  pad_token_id=0)
    for threads in job["threads"]:  # the anchor's best thread count counts
        torch.set_num_threads(threads)
        run(2)  # warm-up
        start = time.perf_counter()
        out = run(job["new_tokens"])
        seconds = time.perf_counter() - start
        if batch not in results or seconds < results[batch]["seconds"]:
            results[batch] = {"seconds": seconds, "threads": threads, "tokens": out[:, ids.shape[1]:].tolist()}
print(json.dumps(results))
"""


def _ref_command(ref_python):
    if importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"):
        return [sys.executable]
    if ref_python and os.path.exists(ref_python):
        return [ref_python]
    return None


def _run_ref(command, *args):
    result = subprocess.run(command + ["-c", _REF_SNIPPET, *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"the Transformers run failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _table(title, header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate([header] + rows):
        print("  ".join(str(c).rjust(w) if j else str(c).ljust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def bench_cache(new_tokens, repeats):
    import numpy as np
    import tf_keras as keras

    from kerasllm.generation import generate
    from kerasllm.models import get_preset, gpt_decoder

    keras.utils.set_random_seed(0)
    config = get_preset("gpt-tiny", dropout=0.0, attention_dropout=0.0, initializer_range=0.1, **TINY)
    if PROMPT_LENGTH + new_tokens > config.max_position:
        raise SystemExit(f"--new-tokens {new_tokens}: the tiny model has {config.max_position} positions")
    model = gpt_decoder(config)
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, (1, PROMPT_LENGTH)).tolist()

    def run(**options):
        return generate(model, prompt, max_new_tokens=new_tokens, **options).tokens[0]

    settings = {
        "cached, XLA": dict(jit_compile=True),
        "cached, no XLA": dict(jit_compile=False),
        "uncached (recompute)": dict(use_cache=False),
    }
    for options in settings.values():  # warm-up: trace, and compile for the cache size of the timed runs
        generate(model, prompt, max_new_tokens=new_tokens if options.get("use_cache", True) else 2, **options)
    best, outputs = {}, {}
    for _ in range(repeats):
        for name, options in settings.items():
            seconds, outputs[name] = _timed(lambda: run(**options))
            best[name] = min(best.get(name, seconds), seconds)
    same = outputs["cached, XLA"] == outputs["uncached (recompute)"] == outputs["cached, no XLA"]
    first_diff = next((i for i, (a, b) in enumerate(zip(outputs["cached, XLA"], outputs["uncached (recompute)"])) if a != b), None)
    base = best["uncached (recompute)"]
    rows = [[name, f"{seconds:.2f}", f"{new_tokens / seconds:.1f}", f"{base / seconds:.1f}x"] for name, seconds in best.items()]
    _table(
        f"Greedy, {new_tokens} new tokens after a {PROMPT_LENGTH}-token prompt, batch 1: random gpt-tiny "
        f"({TINY['num_layers']} layers, hidden {TINY['hidden_size']}, vocab {TINY['vocab_size']}); best of {repeats}",
        ["decoding", "seconds", "tokens/s", "vs uncached"],
        rows,
    )
    print(f"cached == uncached token for token ({new_tokens} tokens): {same}"
          + ("" if same else f" (first difference at token {first_diff})"))
    print(f"cache speed-up (XLA step / uncached): {base / best['cached, XLA']:.1f}x; "
          f"XLA vs no XLA: {best['cached, no XLA'] / best['cached, XLA']:.2f}x")
    return same


def bench_transformers(new_tokens, repeats, ref_python):
    import numpy as np

    from kerasllm.checkpoints import from_pretrained
    from kerasllm.generation import generate

    command = _ref_command(ref_python)
    if command is None:
        print("\nTransformers comparison skipped: torch/transformers not importable here and no --ref-python given")
        return
    rng = np.random.default_rng(1)
    prompts = {str(b): rng.integers(0, 50257, (b, PROMPT_LENGTH)).tolist() for b in (1, 8)}
    job = json.dumps({"prompts": prompts, "new_tokens": new_tokens, "threads": [1, 2]})
    with tempfile.TemporaryDirectory(prefix="kerasllm-generate-bench-") as folder:
        versions = _run_ref(command, "write", folder)
        model = from_pretrained(folder)
        hf_best, ours_best, ours_tokens, hf_tokens = {}, {}, {}, {}
        first = {}
        for b, p in prompts.items():  # warm-up: trace and compile for the shapes of the timed runs
            first[b], _ = _timed(lambda: generate(model, p, max_new_tokens=new_tokens))
        for _ in range(repeats):
            for b, res in _run_ref(command, "time", folder, job).items():
                if res["seconds"] < hf_best.get(b, (float("inf"),))[0]:
                    hf_best[b] = (res["seconds"], res["threads"])
                hf_tokens[b] = res["tokens"]
            for b, p in prompts.items():
                seconds, out = _timed(lambda: generate(model, p, max_new_tokens=new_tokens))
                ours_best[b] = min(ours_best.get(b, seconds), seconds)
                ours_tokens[b] = out.tokens
    rows = []
    for b in prompts:
        n = int(b) * new_tokens
        ours, hf = n / ours_best[b], n / hf_best[b][0]
        same = float(np.mean([x == y for x, y in zip(ours_tokens[b], hf_tokens[b])]))
        rows.append([b, f"{ours:.1f}", f"{hf:.1f} ({hf_best[b][1]} thr)", f"{ours / hf:.2f}", f"{same:.0%}",
                     f"{first[b]:.1f}"])
    _table(
        f"Greedy generation, GPT-2-small shape (12 layers, hidden 768, 12 heads, vocab 50257), random weights, "
        f"{PROMPT_LENGTH}-token prompts + {new_tokens} new tokens; best of {repeats}\n"
        f"anchor: Transformers {versions['transformers']} generate on PyTorch {versions['torch']}, best of 1 and 2 "
        "threads (2 OpenMP threads collapse when the cores are shared)",
        ["batch", "kerasllm tok/s", "Transformers tok/s", "ratio", "same tokens (rows)", "kerasllm 1st call s"],
        rows,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated in the cache comparison")
    parser.add_argument("--hf-new-tokens", type=int, default=32, help="tokens generated in the Transformers comparison")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per side; the best time counts")
    parser.add_argument("--ref-python", default="/work/refvenv/bin/python", help="interpreter with torch + transformers")
    parser.add_argument("--skip-hf", action="store_true", help="only the cache and XLA comparisons")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs (shared with other jobs: absolute times are context, ratios matter)")
    same = bench_cache(args.new_tokens, args.repeats)
    if not args.skip_hf:
        bench_transformers(args.hf_new_tokens, args.repeats, args.ref_python)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
