#!/usr/bin/env bash
# Train (or resume) the default restorer on every GPU of one host, as one time-boxed chunk.
#   scripts/train_default_gpu.sh DATA.npz RUN_DIR MINUTES [more train_restorer arguments]
# Run it again with the same RUN_DIR to resume from its checkpoint (see docs/training/).
set -euo pipefail
data=$1 run=$2 minutes=$3
shift 3
# NVLink multicast stays off (shared hosts): NCCL, PyTorch and NVSHMEM each have a switch.
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
ngpu=$(python3 -c "import torch; print(max(1, torch.cuda.device_count()))")
exec torchrun --standalone --nproc_per_node="$ngpu" -m restorer_core.train.train_restorer \
    --data "$data" --out "$run" --minutes "$minutes" "$@"
