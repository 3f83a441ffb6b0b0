"""ckpt-tui benchmark suite: ``python -m benchmarks [--quick]``.

Every measurement runs next to its reference (``du -s``, ``rm -rf``, a small index) in the
same run, on synthetic trees with real safetensors headers and sparse data; results go to
``benchmarks/results/latest.json`` and a table on stdout, with pass/fail per target.
"""
