#!/bin/sh
# On a machine with a CUDA GPU and a CUDA build of torch: the tests that run on the GPU (the
# torch interpreter's ops and zoo models on the GPU beside the CPU, distillation there), then
# the GPU-against-CPU distillation benchmark (benchmarks/distill_device.py; pass its flags,
# e.g. --baseline TREE). Python packages the machine lacks (onnx-graphsurgeon, platformdirs)
# can be given as wheels in .whl/: they are installed into /tmp/site first.
set -e
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'"
python3 -m pytest -q -p no:cacheprovider tests/recover/test_distill_device.py \
    tests/recover/test_distill_precision.py tests/recover/test_bridge.py
exec python3 benchmarks/distill_device.py "$@"
