#!/usr/bin/env bash
# Issue 3's GPU check in one call of the device tool: the client kernels against cuDNN and the
# batched executor's CUDA-graph replays against the sequential executor (tests), then the seed's GPU
# workload (bench_fl.py speed, 10 and 100 CNN clients).
#
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=570)
#
# By default the benchmark runs the variants docs/measurements.md "Executors on a GPU" reports: the sequential
# executor at 10 clients (the baseline on the same card), the default CUDA graph, the client-kernel
# convolutions, torch.compile + CUDA graph with grouped and with client-kernel convolutions, and
# --flopynet-executor compiled (client kernels, groups padded), at 10 and 100 clients, 2 timed rounds
# each, with a kernel profile of the compiled client-kernel step (`--variants .` runs every variant).
# Measured 2026-11-26: 261 s on an H200 (tests 110 s) without the padded variant, which adds about
# 25 s, plus about 30 s for the machine's start; the compiled variants come last, so a timeout cuts
# them off first.
# Arguments replace the default ones, e.g.
#   bash benchmarks/gpu_check.sh --clients 100 --rounds 1 --sequential-up-to 0 --variants 'client-kernel' --profile
#
# The device's python3 (3.12, with torch, numpy, scikit-learn, networkx, PyYAML) lacks jsonschema;
# .whl (ignored by git) holds it and its needs for that python, fetched here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
#     referencing==0.37.0 rpds-py==2026.9.1
# Logs go to $OUT (the device tool brings them back); the table is printed last.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/flopynet-gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi -L
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
    torch.backends.cudnn.version(), torch.cuda.get_device_name())'
# does CUDA autocast reach a vmapped convolution? (on the CPU it does not; docs/measurements.md, "Correction")
python3 -c 'import torch; x, w = torch.randn(2, 4, 3, 8, 8, device="cuda"), torch.randn(2, 5, 3, 3, 3, device="cuda")
with torch.autocast("cuda", dtype=torch.bfloat16):
    print("vmap(conv2d) under CUDA bfloat16 autocast returns", torch.vmap(torch.nn.functional.conv2d)(x, w).dtype)'
# the client kernels against cuDNN, then the GPU replays against the sequential executor (graph,
# matmul-graph, client-kernel-graph, client-kernel-compiled-graph; the CPU equalities run in CI, and
# the other compiled graph is checked by the benchmark, which prints each variant's distance from
# the first variant's model)
export TRITON_PRINT_AUTOTUNING=1  # the block sizes the client kernels' autotuning picks, in the logs
timeout 200 python3 -m pytest -q -p no:randomly -W ignore::DeprecationWarning tests/fl/test_client_conv.py \
    tests/fl/test_training.py -k "gpu or (cuda_graph and not (compiled and not client))" 2>&1 | tee "$OUT/tests.log"
args=("$@")
[ $# -gt 0 ] || args=(--clients 10 100 --rounds 2 --sequential-up-to 10
                      --variants '^sequential$|\(default\)|client-kernel|compiled|torch.compile \+ CUDA graph$'
                      --profile 'compile.*client-kernel')
timeout 330 python3 benchmarks/bench_fl.py speed "${args[@]}" 2>&1 | tee "$OUT/bench.log"
