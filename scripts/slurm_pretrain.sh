#!/bin/bash
# gptforge pretrain on several SLURM nodes: one torchrun (or accelerate) launcher per node, meeting at a c10d
# rendezvous on the first node. Submit with `sbatch scripts/slurm_pretrain.sh`; set the nodes and processes per node
# below (one per GPU, or a few per CPU-only node), and the pretrain arguments in PRETRAIN_ARGS.
#
#SBATCH --job-name=gptforge-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one launcher per node; it starts the node's processes
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out

set -euo pipefail

PROCS_PER_NODE=${PROCS_PER_NODE:-1}  # GPUs per node (or processes per CPU-only node)
LAUNCHER=${LAUNCHER:-torchrun}       # torchrun | accelerate
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-scripts/accelerate_fsdp.yaml}
PRETRAIN_ARGS=${PRETRAIN_ARGS:---out runs/multinode --preset tiny --max-steps 1000 --resume}

# the first node of the allocation hosts the rendezvous; every node must reach it on PORT
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((SLURM_CPUS_PER_TASK / PROCS_PER_NODE))}

if [ "$LAUNCHER" = torchrun ]; then
    # c10d rendezvous: node ranks are assigned as the launchers arrive; RDZV id keeps concurrent jobs apart
    srun torchrun \
        --nnodes "$SLURM_NNODES" --nproc_per_node "$PROCS_PER_NODE" \
        --rdzv-backend c10d --rdzv-endpoint "$HEAD_NODE:$PORT" --rdzv-id "$SLURM_JOB_ID" \
        -m gptforge.scripts.cli pretrain $PRETRAIN_ARGS
else
    # accelerate needs each node's rank: SLURM_NODEID, expanded on the node itself (hence the single quotes)
    export HEAD_NODE PORT ACCELERATE_CONFIG PRETRAIN_ARGS PROCS_PER_NODE
    srun bash -c 'accelerate launch --config_file "$ACCELERATE_CONFIG" \
        --num_machines "$SLURM_NNODES" --num_processes "$((SLURM_NNODES * PROCS_PER_NODE))" \
        --machine_rank "$SLURM_NODEID" --main_process_ip "$HEAD_NODE" --main_process_port "$PORT" \
        -m gptforge.scripts.cli pretrain $PRETRAIN_ARGS'
fi
