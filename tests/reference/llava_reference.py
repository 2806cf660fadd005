#!/usr/bin/python3
"""Independent reference for LLaVA-1.5 / Video-LLaVA logits (Hugging Face checkpoints).

Written from the published architectures (CLIP ViT, LLaVA projector, Llama decoder) with its
own safetensors reader; needs only the standard library and torch. Everything runs in float64.

  llava_reference.py --model DIR --pixels FILE --ids FILE --vision-begin N --out FILE [--image]

  --pixels  safetensors file with one tensor "pixels" [B, 3, S, S] (normalised frames)
  --ids     JSON list of the prompt's token ids, vision block expanded to placeholder ids
  --out     safetensors file receiving "logits" [vocab] F64: the last prompt token's logits
"""
import argparse
import json
import math
import os
import struct
import sys

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8}


class RefError(Exception):
    pass


# --- safetensors ---------------------------------------------------------------------------

def read_safetensors(path):
    """name -> float64 tensor: 8-byte little-endian header length, JSON header, raw data."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise RefError(f"{path}: shorter than a safetensors header")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise RefError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise RefError(f"{path}: tensor {name}: unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = list(info["shape"])
        numel = math.prod(shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - begin != numel * itemsize or end > len(data):
            raise RefError(f"{path}: tensor {name}: data_offsets do not match its shape")
        if numel == 0:
            t = torch.zeros(shape, dtype=dtype)
        else:
            t = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(shape)
        out[name] = t.to(torch.float64)
    return out


def write_safetensors(path, name, values):
    """One F64 tensor of shape [len(values)]."""
    header = json.dumps({name: {"dtype": "F64", "shape": [len(values)], "data_offsets": [0, 8 * len(values)]}})
    header = header.encode("utf-8")
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + struct.pack(f"<{len(values)}d", *values))


def canonical(name):
    """Newer HF names ("model.language_model.*", "lm_head.*", "model.vision_tower.*") -> older ones."""
    if name.startswith("model.language_model."):
        return "language_model.model." + name[len("model.language_model."):]
    if name.startswith("lm_head."):
        return "language_model." + name
    for part in ("vision_tower.", "video_tower.", "image_tower.", "multi_modal_projector."):
        if name.startswith("model." + part):
            return name[len("model."):]
    return name


def load_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(os.path.join(model_dir, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        raise RefError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")
    weights = {}
    for file in files:
        for name, t in read_safetensors(os.path.join(model_dir, file)).items():
            weights[canonical(name)] = t
    return weights


# --- building blocks -------------------------------------------------------------------------

def activation(name):
    acts = {
        "gelu": lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))),
        "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
        "silu": lambda x: x * torch.sigmoid(x),
        "relu": lambda x: torch.clamp(x, min=0.0),
    }
    if name not in acts:
        raise RefError(f"activation '{name}' is not implemented in the reference")
    return acts[name]


def linear(x, w, b=None):
    y = x @ w.t()
    return y if b is None else y + b


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def rms_norm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


# --- CLIP vision tower -----------------------------------------------------------------------

def clip_hidden_states(W, prefix, vc, pixels):
    """All hidden states of CLIPVisionModel: [0] embeddings after pre_layrnorm, [i] layer i's output."""
    g = lambda n: W[prefix + n]
    d, heads, eps = vc["hidden_size"], vc["num_attention_heads"], vc["layer_norm_eps"]
    p = vc["patch_size"]
    act = activation(vc["hidden_act"])
    if pixels.shape[-1] != vc["image_size"] or pixels.shape[-2] != vc["image_size"]:
        raise RefError(f"pixels are {pixels.shape[-2]}x{pixels.shape[-1]}, the tower takes {vc['image_size']}")
    patches = torch.nn.functional.conv2d(pixels, g("embeddings.patch_embedding.weight"), stride=p)  # [B, D, g, g]
    patches = patches.flatten(2).transpose(1, 2)
    b = pixels.shape[0]
    x = torch.cat([g("embeddings.class_embedding").reshape(1, 1, d).expand(b, 1, d), patches], 1)
    x = x + g("embeddings.position_embedding.weight")
    x = layer_norm(x, g("pre_layrnorm.weight"), g("pre_layrnorm.bias"), eps)
    states = [x]
    hd = d // heads
    t = x.shape[1]
    for i in range(vc["num_hidden_layers"]):
        L = lambda n: g(f"encoder.layers.{i}.{n}")
        h = layer_norm(x, L("layer_norm1.weight"), L("layer_norm1.bias"), eps)
        split = lambda y: y.reshape(b, t, heads, hd).transpose(1, 2)  # [B, H, T, hd]
        q = split(linear(h, L("self_attn.q_proj.weight"), L("self_attn.q_proj.bias"))) * hd ** -0.5
        k = split(linear(h, L("self_attn.k_proj.weight"), L("self_attn.k_proj.bias")))
        v = split(linear(h, L("self_attn.v_proj.weight"), L("self_attn.v_proj.bias")))
        attn = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
        attn = attn.transpose(1, 2).reshape(b, t, d)
        x = x + linear(attn, L("self_attn.out_proj.weight"), L("self_attn.out_proj.bias"))
        h = layer_norm(x, L("layer_norm2.weight"), L("layer_norm2.bias"), eps)
        x = x + linear(act(linear(h, L("mlp.fc1.weight"), L("mlp.fc1.bias"))), L("mlp.fc2.weight"), L("mlp.fc2.bias"))
        states.append(x)
    return states


# --- Llama decoder ---------------------------------------------------------------------------

def rope(x, positions, theta, scaling):
    """Rotate-half RoPE on x [H, L, hd]."""
    hd = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    pos = positions.to(torch.float64) / scaling
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat([freqs, freqs], -1)
    rotated = torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], -1)
    return x * emb.cos() + rotated * emb.sin()


def llama_logits(W, tc, embeds):
    pre = "language_model.model."
    n_layers, heads = tc["num_hidden_layers"], tc["num_attention_heads"]
    kv_heads = tc["num_key_value_heads"] or heads
    eps, theta, act = tc["rms_norm_eps"], tc["rope_theta"], activation(tc["hidden_act"])
    scaling = 1.0
    rs = tc.get("rope_scaling")
    n, d = embeds.shape
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "linear":
            scaling = float(rs["factor"])
        elif kind == "default" or (kind == "dynamic" and n <= tc["max_position_embeddings"]):
            pass  # dynamic NTK scaling leaves prompts within max_position_embeddings untouched
        else:
            raise RefError(f"rope_scaling {rs} is not implemented in the reference")
    hd = d // heads
    group = heads // kv_heads
    positions = torch.arange(n)
    causal = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)
    opt = lambda name: W.get(name)
    x = embeds
    for i in range(n_layers):
        L = lambda s: pre + f"layers.{i}." + s
        h = rms_norm(x, W[L("input_layernorm.weight")], eps)
        q = linear(h, W[L("self_attn.q_proj.weight")], opt(L("self_attn.q_proj.bias")))
        k = linear(h, W[L("self_attn.k_proj.weight")], opt(L("self_attn.k_proj.bias")))
        v = linear(h, W[L("self_attn.v_proj.weight")], opt(L("self_attn.v_proj.bias")))
        q = rope(q.reshape(n, heads, hd).transpose(0, 1), positions, theta, scaling)
        k = rope(k.reshape(n, kv_heads, hd).transpose(0, 1), positions, theta, scaling)
        v = v.reshape(n, kv_heads, hd).transpose(0, 1)
        k = k.repeat_interleave(group, 0)  # kv head j serves query heads j*group .. (j+1)*group-1
        v = v.repeat_interleave(group, 0)
        probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + causal, -1)
        attn = (probs @ v).transpose(0, 1).reshape(n, d)
        x = x + linear(attn, W[L("self_attn.o_proj.weight")], opt(L("self_attn.o_proj.bias")))
        h = rms_norm(x, W[L("post_attention_layernorm.weight")], eps)
        mlp = act(linear(h, W[L("mlp.gate_proj.weight")])) * linear(h, W[L("mlp.up_proj.weight")])
        x = x + linear(mlp, W[L("mlp.down_proj.weight")])
    x = rms_norm(x[-1], W[pre + "norm.weight"], eps)
    head = W.get("language_model.lm_head.weight", W[pre + "embed_tokens.weight"])  # tied when absent
    return linear(x, head)


# --- LLaVA -----------------------------------------------------------------------------------

def run(args):
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    archs = cfg.get("architectures") or []
    if "VideoLlavaForConditionalGeneration" in archs and args.image:
        video, tower, token_key = False, "image_tower.vision_model.", "image_token_index"
    elif "VideoLlavaForConditionalGeneration" in archs:
        video, tower, token_key = True, "video_tower.vision_model.", "video_token_index"
    elif "LlavaForConditionalGeneration" in archs:
        video, tower, token_key = False, "vision_tower.vision_model.", "image_token_index"
    else:
        raise RefError(f"unsupported architectures {archs}")
    vc = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224,
          "patch_size": 32, "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"}  # CLIPVisionConfig defaults
    vc.update(cfg["vision_config"])
    tc = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None, "rms_norm_eps": 1e-6,
          "rope_theta": 10000.0, "rope_scaling": None, "hidden_act": "silu",
          "max_position_embeddings": 2048}  # LlamaConfig defaults
    tc.update(cfg["text_config"])
    feature_layer = cfg.get("vision_feature_layer", -2)
    if not isinstance(feature_layer, int):
        raise RefError("vision_feature_layer must be an integer")
    strategy = cfg.get("vision_feature_select_strategy", "default")
    placeholder = cfg.get(token_key, cfg.get(token_key.replace("index", "id"), 32001 if video else 32000))

    W = load_weights(args.model)
    pixels = read_safetensors(args.pixels)["pixels"]
    with open(args.ids) as f:
        ids = [int(i) for i in json.load(f)]

    # Vision features: hidden_states[vision_feature_layer]; images drop CLS under "default",
    # Video-LLaVA's video frames keep every token. Frames are concatenated in order.
    feats = clip_hidden_states(W, tower, vc, pixels)[feature_layer]
    if not video and strategy == "default":
        feats = feats[:, 1:]
    elif not video and strategy != "full":
        raise RefError(f"unknown vision_feature_select_strategy '{strategy}'")
    feats = feats.reshape(-1, feats.shape[-1])
    act = activation(cfg.get("projector_hidden_act", "gelu"))
    P = lambda n: W["multi_modal_projector." + n]
    vision = linear(act(linear(feats, P("linear_1.weight"), P("linear_1.bias"))), P("linear_2.weight"), P("linear_2.bias"))

    # Splice: the placeholder ids must form exactly the block [vision_begin, vision_begin + n).
    n_vision = vision.shape[0]
    where = [i for i, t in enumerate(ids) if t == placeholder]
    if where != list(range(args.vision_begin, args.vision_begin + n_vision)):
        raise RefError(f"placeholder id {placeholder} occupies {len(where)} positions starting at "
                       f"{where[0] if where else None}; expected {n_vision} from {args.vision_begin}")
    embed = W["language_model.model.embed_tokens.weight"]
    vocab = embed.shape[0]
    if any(t < 0 or t >= vocab for i, t in enumerate(ids) if t != placeholder):
        raise RefError(f"a token id lies outside the vocabulary ({vocab})")
    safe = torch.tensor([0 if t == placeholder else t for t in ids])
    embeds = embed[safe]
    embeds[args.vision_begin:args.vision_begin + n_vision] = vision
    logits = llama_logits(W, tc, embeds)
    write_safetensors(args.out, "logits", logits.tolist())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pixels", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--vision-begin", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--image", action="store_true",
                    help="Video-LLaVA: the pixels are one still image (image tower, <image>, CLS per strategy)")
    args = ap.parse_args()
    if sys.byteorder != "little":
        sys.exit("llava_reference.py: needs a little-endian machine")
    torch.set_default_dtype(torch.float64)
    try:
        with torch.no_grad():
            run(args)
    except (RefError, KeyError, OSError, ValueError) as e:
        kind = "missing tensor or key " if isinstance(e, KeyError) else ""
        sys.exit(f"llava_reference.py: {kind}{e}")


if __name__ == "__main__":
    main()
