"""Loaded weights as views into the safetensors buffer, or copied into fresh (64-byte aligned) memory: what each costs.

`from_pretrained` leaves every weight a view into the loaded safetensors data, at addresses that need not be 64-byte
aligned; CPU kernels then may take another SIMD path than for a freshly allocated tensor and round differently in the
last bit. Copying each tensor once at load would make a loaded model bit-identical to the one that was saved. This
measures what the copy costs on a 100M+ model (the gpt2-124m preset, random weights, fp32 on CPU): load time, peak
resident memory of the process, forward and greedy-decode speed, and whether the logits match the saved model's.

Each (mode, round) runs in a fresh process, alternating the modes.

Usage:
    python -m benchmarks.aligned_load                 # 3 rounds
    python -m benchmarks.aligned_load --rounds 5
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
import torch
import gptforge
from gptforge import GPTForgeForCausalLM

folder, mode = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
start = time.perf_counter()
model = GPTForgeForCausalLM.from_pretrained(folder).eval()
if mode == "aligned":
    for parameter in model.parameters():
        parameter.data = parameter.data.clone()
load_s = time.perf_counter() - start
misaligned = sum(p.data_ptr() % 64 != 0 for p in model.parameters())
ids = torch.randint(0, 50257, (1, 256), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    model(ids)  # warm-up
    start = time.perf_counter()
    for _ in range(3):
        logits = model(ids).logits
    forward_s = (time.perf_counter() - start) / 3
    start = time.perf_counter()
    model.generate(ids[:, :32], max_new_tokens=32, do_sample=False, min_new_tokens=32, pad_token_id=0)
    decode_s = time.perf_counter() - start
reference = torch.load(folder + "/logits.pt", weights_only=True)
print(json.dumps({
    "load_s": load_s,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "forward_tokens_per_s": 256 / forward_s,
    "decode_tokens_per_s": 32 / decode_s,
    "misaligned_tensors": misaligned,
    "bit_identical_to_saved": bool(torch.equal(logits, reference)),
    "max_abs_diff": (logits - reference).abs().max().item(),
}))
"""

SAVE = r"""
import sys, torch
import gptforge
from gptforge import GPTForgeConfig, GPTForgeForCausalLM
torch.manual_seed(0)
model = GPTForgeForCausalLM(GPTForgeConfig.from_preset("gpt2-124m")).eval()
model.save_pretrained(sys.argv[1])
ids = torch.randint(0, 50257, (1, 256), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    torch.save(model(ids).logits, sys.argv[1] + "/logits.pt")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    results: dict[str, list[dict]] = {"views": [], "aligned": []}
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-c", SAVE, folder], check=True, env=env)
        for round_index in range(args.rounds):
            modes = ["views", "aligned"] if round_index % 2 == 0 else ["aligned", "views"]
            for mode in modes:
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, folder, mode], check=True, env=env, capture_output=True, text=True
                )
                results[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"gpt2-124m (random weights), fp32, CPU ({os.cpu_count()} cores); median of {args.rounds} fresh processes")
    keys = ["load_s", "peak_rss_mb", "forward_tokens_per_s", "decode_tokens_per_s", "misaligned_tensors"]
    print(f"{'':24}" + "".join(f"{k:>22}" for k in keys) + f"{'bit-identical':>16}")
    summary = {}
    for mode, runs in results.items():
        row = {k: statistics.median(r[k] for r in runs) for k in keys}
        row["bit_identical_to_saved"] = [r["bit_identical_to_saved"] for r in runs]
        row["max_abs_diff"] = max(r["max_abs_diff"] for r in runs)
        summary[mode] = row
        print(
            f"{mode:24}" + "".join(f"{row[k]:>22.2f}" for k in keys) + f"{str(all(row['bit_identical_to_saved'])):>16}"
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
