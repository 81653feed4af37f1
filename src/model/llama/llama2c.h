// llama2.c checkpoints (karpathy/llama2.c run.c format) and their tokenizers.
//
// Model file (.bin), all little-endian:
//   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//     (vocab_size > 0: the classifier shares the embedding table; < 0: a separate one follows)
//   f32 token_embedding [vocab, dim]
//   f32 rms_att [layers, dim], wq [layers, dim, dim], wk [layers, kv_dim, dim],
//       wv [layers, kv_dim, dim], wo [layers, dim, dim], rms_ffn [layers, dim],
//       w1 [layers, hidden, dim], w2 [layers, dim, hidden], w3 [layers, hidden, dim],
//       rms_final [dim]
//   f32 legacy RoPE tables 2 x [seq_len, head_size / 2] (unused)
//   f32 wcls [vocab, dim] (only when vocab_size < 0)
// Matrices are [out, in] as in Hugging Face checkpoints. RoPE rotates interleaved pairs
// (x[2i], x[2i+1]) of each head.
//
// Tokenizer file (tok512.bin): int32 max_token_length, then per token: f32 score, int32 length,
// bytes. Ids 0, 1, 2 = <unk>, BOS, EOS; 3..258 = byte-fallback pieces "<0x00>".."<0xFF>";
// pieces use ' ' where SentencePiece writes '▁'.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "model/llama/llama_config.h"
#include "model/tensor_source.h"

namespace nibble {

struct Llama2cModel {
  LlamaConfig config;
  std::unique_ptr<MemoryTensors> tensors;  // Hugging Face names, F32
};

// Reads a llama2.c checkpoint into Hugging Face tensor names. With `hf_layout` the rows of
// wq/wk are permuted within each head (new row c * d/2 + j = old row 2j + c, as transformers'
// convert_llama_weights_to_hf does) so that the model with rotate-half RoPE computes exactly
// what llama2.c computes; without it, they are kept and config.rope_interleaved is set.
// Every size mismatch is an Error naming the file and what was expected.
Llama2cModel read_llama2c(const std::filesystem::path& path, bool hf_layout);

struct Llama2cVocab {
  int32_t max_token_length = 0;
  std::vector<std::string> pieces;  // raw bytes, ' ' for spaces
  std::vector<float> scores;
};

Llama2cVocab read_llama2c_tokenizer(const std::filesystem::path& path, size_t vocab_size);

// tokenizer.json (Hugging Face, Llama-2 style: BPE with byte fallback, merges ranked by the
// merged piece's score) and tokenizer_config.json for a llama2.c vocabulary.
std::string llama2c_tokenizer_json(const Llama2cVocab& vocab);
std::string llama2c_tokenizer_config_json(size_t max_length);

}  // namespace nibble
