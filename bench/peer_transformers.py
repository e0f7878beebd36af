"""The Python peer of bench/gpu.sh: the same reward-model training step and sampling with Hugging Face
transformers and torch, as a researcher would write them. Prints one line:
  peer: train T tokens/s, generate G tokens/s
"""
import argparse, json, time

import torch
import torch.nn.functional as F
import transformers as tf

parser = argparse.ArgumentParser()
parser.add_argument("--config", required=True)
parser.add_argument("--steps", type=int, default=30)
args = parser.parse_args()
torch.manual_seed(0)
config = tf.LlamaConfig(**{k: v for k, v in json.load(open(args.config)).items() if k != "architectures"})
model = tf.LlamaForCausalLM(config).cuda()
head = torch.nn.Linear(config.hidden_size, 1, bias=False).cuda()
optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-5, fused=True)
pairs, length, vocab = 8, 512, config.vocab_size
chosen = torch.randint(3, vocab, (pairs, length), device="cuda")
rejected = torch.randint(3, vocab, (pairs, length), device="cuda")
response = torch.zeros(pairs, length, device="cuda")
response[:, length // 2:] = 1


def step():
    ids = torch.cat([chosen, rejected])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(input_ids=ids, output_hidden_states=True)
    rewards = head(out.hidden_states[-1][:, -1].float()).squeeze(-1)
    bt = -F.logsigmoid(rewards[:pairs] - rewards[pairs:]).mean()
    logp = torch.log_softmax(out.logits[:pairs, :-1].float(), -1).gather(-1, chosen[:, 1:, None]).squeeze(-1)
    sft = -F.logsigmoid(0.1 * (logp * response[:, 1:]).sum(-1)).mean()
    loss = 0.99 * bt + 0.01 * sft
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


for _ in range(3):
    step()
torch.cuda.synchronize()
start = time.time()
for _ in range(args.steps):
    step()
torch.cuda.synchronize()
train = args.steps * 2 * pairs * length / (time.time() - start)

model.eval()
prompts = torch.randint(3, vocab, (64, 64), device="cuda")
with torch.no_grad():
    model.generate(prompts, max_new_tokens=8, do_sample=True, temperature=1.0, pad_token_id=0)
    torch.cuda.synchronize()
    start = time.time()
    model.generate(prompts, max_new_tokens=128, min_new_tokens=128, do_sample=True, temperature=1.0, pad_token_id=0)
    torch.cuda.synchronize()
generate = 64 * 128 / (time.time() - start)
print(f"peer: train {train:.0f} tokens/s, generate {generate:.0f} tokens/s")
