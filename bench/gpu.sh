#!/usr/bin/env bash
# GPU benchmark, grm against the Python peer (Hugging Face transformers + torch) on the same work, in one
# run on one GPU (issue: "GPU speed"). Builds grm against the pip torch's CUDA LibTorch, runs both, prints
# both and their ratio. Last run: one H100, 2026-11-26 (numbers in the README, "On a GPU").
#   reward-model training step: Llama hidden 768, 12 layers, 12 heads, intermediate 2048, vocab 32000,
#     8 pairs x 512 tokens, bf16 autocast, AdamW, loss = BT + 0.01 * SFT  -> tokens/s and model TFLOP/s
#   sampling: 64 prompts x 64 tokens, 128 new tokens, temperature 1       -> generated tokens/s
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
# CMAKE_PREFIX_PATH from the environment is searched too (libraries outside the system paths);
# GRM_BUILD_TESTS=ON also builds the test binary.
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DGRM_CUDA=ON \
  -DGRM_BUILD_TESTS="${GRM_BUILD_TESTS:-OFF}" -DCMAKE_PREFIX_PATH="$prefix;${CMAKE_PREFIX_PATH:-}" \
  > build-cuda.log 2>&1 || { tail -30 build-cuda.log; exit 1; }
cmake --build build-cuda -j "$(nproc)" -- -k 0 >> build-cuda.log 2>&1 || { grep -B2 -A12 "error" build-cuda.log | head -150; exit 1; }

model=${GRM_BENCH_TOKENIZER_MODEL:-tinystories-656k}
grm_train=$(./build-cuda/grm bench train-rm --model "$model" --random-config bench/llama_768x12.json \
  --pairs 8 --tokens 512 --steps 30 --method grm --device cuda | tail -1)
grm_gen=$(./build-cuda/grm bench generate --model "$model" --random-config bench/llama_768x12.json \
  --batch 64 --prompt-tokens 64 --new-tokens 128 --repeats 3 | tail -1)
peer=$(python3 bench/peer_transformers.py --config bench/llama_768x12.json)
echo "grm : $grm_train"
echo "grm : $grm_gen"
echo "peer: $peer"
python3 - "$grm_train" "$grm_gen" "$peer" <<'PY'
import re, sys
train, gen, peer = sys.argv[1:4]
num = lambda pattern, text: float(re.search(pattern, text).group(1))
grm_train, grm_gen = num(r"([0-9.]+) tokens/s", train), num(r"best: ([0-9.]+) tokens/s", gen)
peer_train, peer_gen = num(r"train ([0-9.]+) tokens/s", peer), num(r"generate ([0-9.]+) tokens/s", peer)
print(f"training: grm {grm_train:.0f} vs peer {peer_train:.0f} tokens/s = {grm_train / peer_train:.2f}x")
print(f"sampling: grm {grm_gen:.0f} vs peer {peer_gen:.0f} tokens/s = {grm_gen / peer_gen:.2f}x")
PY

# Memory (issue 16 part 1 and 3): the CUDA allocator's peak during training beside what `grm plan` says for
# the same work, plain, checkpointed and with LoRA; the plan should be within 15%.
printf 'model: %s\nmax_length: 512\nrm: {method: grm}\noptim: {batch_size: 8}\ndevice: cuda\n' "$model" > /tmp/grm_plan.yaml
for setting in "" "--gradient-checkpointing" "--lora"; do
  set_flag=""
  [ "$setting" = "--gradient-checkpointing" ] && set_flag="--set gradient_checkpointing=true"
  [ "$setting" = "--lora" ] && set_flag="--set rm.finetune=lora"
  measured=$(./build-cuda/grm bench train-rm --model "$model" --random-config bench/llama_768x12.json \
    --pairs 8 --tokens 512 --steps 3 --method grm --device cuda $setting | tail -1)
  planned=$(./build-cuda/grm plan --config /tmp/grm_plan.yaml --model-config bench/llama_768x12.json \
    --device h100-80gb $set_flag | grep total)
  echo "memory ${setting:-plain}: $measured"
  echo "  plan: $planned"
done
