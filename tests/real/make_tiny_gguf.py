#!/usr/bin/env python3
"""Write a tiny llama-architecture GGUF model for make test-real-server.

No Debian or npm package ships GGUF model weights, so this builds one from
what the npm package node-llama-cpp carries: llama.cpp's gguf-py writer and
the LLaMA SentencePiece tokenizer file models/ggml-vocab-llama-spm.gguf
(a tokenizer without weights).  The weights are constructed, not trained:
one transformer block whose attention and feed-forward outputs are zero,
so the hidden state is the (shared) token embedding, and an output matrix
that ranks a few tokens: end of text > '"' > "a" > "}" > "0" > everything
else.  Greedy decoding under a JSON-schema grammar therefore produces the
shortest valid object, e.g. {"brand":"a"}, and 0 for a number (so
{"sentiment":"mixed","confidence":0} or another enum value); without a
grammar it ends at once.  It exercises the server, not answer quality.

Usage: make_tiny_gguf.py LLAMA_CPP_SOURCE_DIR OUT.gguf
"""
import sys

src, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, src + "/gguf-py")

import numpy as np  # noqa: E402
import gguf  # noqa: E402

vocab = gguf.GGUFReader(src + "/models/ggml-vocab-llama-spm.gguf")


def field(name):
    """The value(s) of a metadata field of the tokenizer file."""
    f = vocab.fields[name]
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


tokens = field("tokenizer.ggml.tokens")
n_vocab = len(tokens)
n_embd, n_ff, n_head = 64, 128, 4
eos = field("tokenizer.ggml.eos_token_id")

w = gguf.GGUFWriter(out, "llama")
w.add_name("rvbbit-tiny-test")
w.add_context_length(4096)
w.add_embedding_length(n_embd)
w.add_block_count(1)
w.add_feed_forward_length(n_ff)
w.add_head_count(n_head)
w.add_head_count_kv(n_head)
w.add_layer_norm_rms_eps(1e-5)
w.add_rope_dimension_count(n_embd // n_head)
w.add_vocab_size(n_vocab)
w.add_file_type(gguf.LlamaFileType.ALL_F32)
w.add_tokenizer_model(field("tokenizer.ggml.model"))
w.add_tokenizer_pre(field("tokenizer.ggml.pre"))
w.add_token_list(tokens)
w.add_token_scores(field("tokenizer.ggml.scores"))
w.add_token_types(field("tokenizer.ggml.token_type"))
w.add_bos_token_id(field("tokenizer.ggml.bos_token_id"))
w.add_eos_token_id(eos)
w.add_unk_token_id(field("tokenizer.ggml.unknown_token_id"))
w.add_add_bos_token(True)
w.add_add_eos_token(False)
# a plain template without a generation prompt (the server would otherwise
# make the grammar start with it)
w.add_chat_template("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")

f32 = np.float32
w.add_tensor("token_embd.weight", np.ones((n_vocab, n_embd), dtype=f32))
w.add_tensor("output_norm.weight", np.ones((n_embd,), dtype=f32))
out_w = np.zeros((n_vocab, n_embd), dtype=f32)
for tok, score in ((eos, 10.0), (tokens.index('"'), 9.0), (tokens.index("a"), 8.0),
                   (tokens.index("}"), 7.0), (tokens.index("0"), 6.0)):
    out_w[tok, :] = score / n_embd
w.add_tensor("output.weight", out_w)
w.add_tensor("blk.0.attn_norm.weight", np.ones((n_embd,), dtype=f32))
w.add_tensor("blk.0.ffn_norm.weight", np.ones((n_embd,), dtype=f32))
for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
    w.add_tensor("blk.0.%s.weight" % name, np.zeros((n_embd, n_embd), dtype=f32))
w.add_tensor("blk.0.ffn_gate.weight", np.zeros((n_ff, n_embd), dtype=f32))
w.add_tensor("blk.0.ffn_up.weight", np.zeros((n_ff, n_embd), dtype=f32))
w.add_tensor("blk.0.ffn_down.weight", np.zeros((n_embd, n_ff), dtype=f32))

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(out)
