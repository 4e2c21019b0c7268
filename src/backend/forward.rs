//! The forward family of the seam: the operations a Llama-family decoder needs beyond the
//! matrix core (`gemm`, `axpy`, `copy`). `cpu_forward.rs` (faer + threaded loops) is the
//! reference; the GPU twins live in `gpu/` (one `.wgsl` + one launcher per family) and are
//! checked against it in `tests/gpu_forward_*.rs`.
//!
//! Activations are token-major `[T, d]`, i.e. the column-major `d × T` matrix of the seam:
//! column `t` is token `t`'s vector, so a linear layer is one GEMM and a Gram update is `XᵀX`
//! on the same buffer. A batch of `T = nseq · seqlen` tokens holds `nseq` independent
//! sequences of `seqlen` tokens each, back to back; only `rope` (positions restart at every
//! sequence) and `attention` (causal within a sequence) see that structure.
//!
//! The math, as in Hugging Face transformers (`modeling_llama.py`), all in f32:
//! - `rmsnorm`: `y = w ⊙ (x · 1/√(mean(x²) + ε))`, over segments of `dim` rows (`dim = d` for
//!   the block norms, `head_dim` for Qwen3's per-head q/k norms).
//! - `rope` (rotate-half convention): for `i < h = head_dim/2`, with `c = cos θ_{p,i}`,
//!   `s = sin θ_{p,i}`: `y_i = x_i·c − x_{i+h}·s`, `y_{i+h} = x_{i+h}·c + x_i·s`.
//! - `attention`: per query head `a` (kv head `a / (n_heads / n_kv_heads)`), per sequence,
//!   `P = softmax_j(scale · k_jᵀ q_t)` over `j ≤ t`, `o_t = Σ_j P_{jt} v_j`.
//! - `silu_mul`: `g ← g / (1 + e^{−g}) · u` (SwiGLU's gate).
//! - `nll`: `−log softmax(z)_target = logsumexp(z) − z_target` per column.

use super::Backend;
use crate::Result;

/// Shapes of one attention call: `q` is `(n_heads · head_dim) × T`, `k` and `v` are
/// `(n_kv_heads · head_dim) × T`, `T` a multiple of `seqlen`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnSpec {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Tokens per independent causal sequence.
    pub seqlen: usize,
    /// Multiplies the scores (`1/√head_dim` for every model here).
    pub scale: f32,
}

impl AttnSpec {
    /// Panics (a bug) unless the shapes fit: heads divide evenly, `T` is whole sequences.
    #[track_caller]
    pub fn check(&self, q_rows: usize, k_rows: usize, v_rows: usize, tokens: usize) {
        assert!(
            self.n_kv_heads > 0 && self.n_heads % self.n_kv_heads == 0,
            "attention: {} heads over {} kv heads",
            self.n_heads,
            self.n_kv_heads
        );
        assert_eq!(q_rows, self.n_heads * self.head_dim, "attention: q rows");
        assert_eq!(k_rows, self.n_kv_heads * self.head_dim, "attention: k rows");
        assert_eq!(v_rows, self.n_kv_heads * self.head_dim, "attention: v rows");
        assert!(
            self.seqlen > 0 && tokens % self.seqlen == 0,
            "attention: {tokens} tokens are not whole sequences of {}",
            self.seqlen
        );
    }
}

/// The rotary table of `seqlen` positions: a `head_dim × seqlen` matrix whose column `p`
/// holds `cos θ_{p,i}` in rows `0..h` and `sin θ_{p,i}` in rows `h..2h` (`h = head_dim/2`).
/// `θ_{p,i} = p · inv_freq[i]`, the product rounded to f32 as in transformers; cos / sin are
/// evaluated in f64 and rounded. Both backends upload the same host table.
pub fn rope_table(inv_freq: &[f32], seqlen: usize) -> Vec<f32> {
    let h = inv_freq.len();
    let mut t = vec![0f32; 2 * h * seqlen];
    for p in 0..seqlen {
        let col = &mut t[p * 2 * h..(p + 1) * 2 * h];
        for (i, &f) in inv_freq.iter().enumerate() {
            let theta = f64::from(p as f32 * f);
            col[i] = theta.cos() as f32;
            col[h + i] = theta.sin() as f32;
        }
    }
    t
}

/// The forward operations, on matrices resident on the backend. Shape mismatches are bugs
/// (panics); device failures are `Err`.
pub trait Forward: Backend {
    /// Embedding gather: `out[:, t] = table[:, ids[t]]`. `table` is `d × vocab` (the
    /// row-major `[vocab, d]` tensor of a checkpoint); `out` is `d × ids.len()`.
    /// Ids must be `< vocab` (checked by the caller against the config).
    fn gather(&self, table: &Self::Mat, ids: &Self::Idx) -> Result<Self::Mat>;

    /// RMSNorm over each segment of `dim` rows of every column of `x` (`x.rows % dim == 0`),
    /// scaled by `w` (`dim × 1`). Returns a new matrix; `x` is kept (it is the residual).
    fn rmsnorm(&self, x: &Self::Mat, w: &Self::Mat, dim: usize, eps: f32) -> Result<Self::Mat>;

    /// `y[:, t] += b` for every column (`b` is `rows × 1`).
    fn add_bias(&self, y: &mut Self::Mat, b: &Self::Mat) -> Result<()>;

    /// Rotary embedding in place on every `head_dim` segment of every column of `x`; column
    /// `t` is at position `t % seqlen`, `table` is [`rope_table`] (`head_dim × seqlen`).
    fn rope(&self, x: &mut Self::Mat, table: &Self::Mat, head_dim: usize) -> Result<()>;

    /// Causal multi-head attention with grouped K/V (see [`AttnSpec`]); returns
    /// `(n_heads · head_dim) × T`.
    fn attention(
        &self,
        q: &Self::Mat,
        k: &Self::Mat,
        v: &Self::Mat,
        spec: &AttnSpec,
    ) -> Result<Self::Mat>;

    /// `gate ← silu(gate) ⊙ up` (same shapes).
    fn silu_mul(&self, gate: &mut Self::Mat, up: &Self::Mat) -> Result<()>;

    /// Per-token symmetric fake quantization in place, over each segment of `dim` rows of every
    /// column (`dim = rows` for a whole token vector; `head_dim` for per-head K/V): with
    /// `a = max |x|` over the segment and `qmax = 2^(bits−1) − 1`, `s = a / qmax` (a segment of
    /// zeros stays zero), `x ← s · clamp(round_ties_even(x / s), −qmax − 1, qmax)`.
    /// Panics unless `bits ∈ 2..=8` and `rows % dim == 0`.
    fn fake_quant(&self, x: &mut Self::Mat, dim: usize, bits: u32) -> Result<()>;

    /// Negative log-likelihood of each column's target: `logits` is `vocab × T`, `targets`
    /// has `T` entries `< vocab`; returns `T × 1`.
    fn nll(&self, logits: &Self::Mat, targets: &Self::Idx) -> Result<Self::Mat>;
}
