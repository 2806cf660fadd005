#!/usr/bin/python3
"""Writes the language model of a Hugging Face LLaVA/LLaMA directory written by make_tiny_model
as a llama.cpp GGUF file holding the same numbers, so both engines can be timed on one set of
weights (tools/bench_vs_llamacpp).

Usage: PYTHONPATH=LLAMA_CPP/gguf-py /usr/bin/python3 tools/llama_gguf_from_hf.py HF_DIR OUT.gguf VOCAB.gguf

- Weights are copied bit for bit in their stored dtype (F32, F16 or BF16); norms become F32,
  as llama.cpp expects.
- llama.cpp's LLaMA graph applies RoPE to adjacent pairs, while the Hugging Face layout rotates
  halves; the rows of q_proj and k_proj are reordered accordingly (the same reordering
  llama.cpp's own converter applies), so both engines compute the same attention.
- The tokenizer comes from VOCAB.gguf (llama.cpp's models/ggml-vocab-llama-spm.gguf). Embedding
  and output rows beyond its vocabulary (LLaVA pads 32000 to 32064) are left out.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import gguf

NP_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def read_safetensors(path):
    """name -> (dtype string, numpy array of the stored bits)"""
    data = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dt = info["dtype"]
        if dt not in NP_DTYPES:
            sys.exit(f"{path}: tensor {name} has dtype {dt}; only F32, F16 and BF16 are supported")
        arr = np.frombuffer(data, dtype=NP_DTYPES[dt], count=(end - begin) // np.dtype(NP_DTYPES[dt]).itemsize,
                            offset=base + begin)
        out[name] = (dt, arr.reshape(info["shape"]))
    return out


def load_dir(hf_dir):
    tensors = {}
    for f in sorted(Path(hf_dir).glob("*.safetensors")):
        tensors.update(read_safetensors(f))
    if not tensors:
        sys.exit(f"{hf_dir}: no *.safetensors files")
    return tensors


def as_f32(dt, arr):
    if dt == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32)


def pairs_from_halves(w, heads):
    """Reorders the output rows of a q/k projection from rotate-half to adjacent-pair RoPE."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    hf_dir, out_path, vocab_path = sys.argv[1:]
    cfg = json.loads((Path(hf_dir) / "config.json").read_text())
    text = cfg.get("text_config", cfg)
    tensors = load_dir(hf_dir)

    def get(name):
        """`name` as in a plain LLaMA checkpoint, found under any LLaVA prefix."""
        for cand in ("language_model." + name, name.replace("model.", "model.language_model.", 1), name):
            if cand in tensors:
                return tensors[cand]
        sys.exit(f"{hf_dir}: tensor {name} not found")

    vocab = gguf.GGUFReader(vocab_path)
    n_vocab = len(vocab.fields["tokenizer.ggml.tokens"].data)
    hidden, layers = text["hidden_size"], text["num_hidden_layers"]
    heads, kv_heads = text["num_attention_heads"], text.get("num_key_value_heads", text["num_attention_heads"])

    dt_embed, _ = get("model.embed_tokens.weight")
    file_type = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                 "BF16": gguf.LlamaFileType.MOSTLY_BF16}[dt_embed]
    w = gguf.GGUFWriter(out_path, "llama")
    w.add_name("mustdrop-bench-random")
    w.add_context_length(text.get("max_position_embeddings", 4096) * 2)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(text["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(text.get("rms_norm_eps", 1e-5))
    w.add_rope_dimension_count(hidden // heads)
    w.add_rope_freq_base(text.get("rope_theta", 10000.0))
    w.add_vocab_size(n_vocab)
    w.add_file_type(file_type)
    for key, field in vocab.fields.items():
        if not key.startswith("tokenizer."):
            continue
        types = field.types
        if types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, field.contents(), types[0], sub_type=types[1])
        else:
            w.add_key_value(key, field.contents(), types[0])

    def add(name, dt, arr):
        arr = np.ascontiguousarray(arr)
        if dt == "BF16":
            w.add_tensor(name, arr, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(name, arr)

    def add_norm(name, src):
        dt, arr = get(src)
        w.add_tensor(name, as_f32(dt, arr))

    dt, arr = get("model.embed_tokens.weight")
    add("token_embd.weight", dt, arr[:n_vocab])
    for i in range(layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        add_norm(b + "attn_norm.weight", p + "input_layernorm.weight")
        add_norm(b + "ffn_norm.weight", p + "post_attention_layernorm.weight")
        dt, q = get(p + "self_attn.q_proj.weight")
        add(b + "attn_q.weight", dt, pairs_from_halves(q, heads))
        dt, k = get(p + "self_attn.k_proj.weight")
        add(b + "attn_k.weight", dt, pairs_from_halves(k, kv_heads))
        for src, dst in (("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
                         ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")):
            dt, arr = get(p + src + ".weight")
            add(b + dst + ".weight", dt, arr)
    add_norm("output_norm.weight", "model.norm.weight")
    dt, arr = get("lm_head.weight")
    add("output.weight", dt, arr[:n_vocab])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out_path}: {layers} layers, hidden {hidden}, vocab {n_vocab}, {dt_embed}")


if __name__ == "__main__":
    main()
