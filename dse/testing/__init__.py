"""Test support: offline tiny models with random weights.

Nothing here is used in production code paths. :mod:`dse.testing.tiny` builds, for
each supported model family, a tiny random-weight checkpoint laid out exactly like a
Hugging Face hub snapshot (config, safetensors weights, tokenizer, processor files,
chat template), so that tests and benchmarks run with no network through the same
loading code as the published models::

    python -m dse.testing.tiny dse-qwen2 /tmp/tiny-dse
"""
