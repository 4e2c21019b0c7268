//! Perplexity of a model on a text, block by block.
//!
//! The windows are embedded once, then every decoder block is loaded, run over all windows
//! and dropped before the next one is loaded (the order the quantization pipeline runs
//! in), so memory holds one block's weights plus the activation stream
//! (`windows · seqlen · hidden` f32), never the whole model in f32. The logits are formed a
//! few hundred tokens at a time and reduced to per-token NLLs on the backend; only those
//! NLLs are read back.
//!
//! Protocols:
//! - [`Protocol::Standard`] (the common one, transformers' `eval_ppl.py`): the text tokenized
//!   whole without special tokens, non-overlapping windows of `seqlen` tokens (the tail
//!   dropped), every token but each window's first scored.
//! - [`Protocol::Paper`]: windows of `[BOS] + seqlen − 1` text tokens (non-overlapping in the
//!   text), only targets at positions `seqlen/2 .. seqlen` scored (the second half).
//!
//! `ppl = exp(mean NLL)` over the scored tokens, the mean taken in f64.

use std::time::Instant;

use super::files::ModelDir;
use super::llama::{load_embedding, Block, FakeQuantTaps, Head, NoTaps};
use crate::algo::{tick, Progress};
use crate::backend::{forward::rope_table, Forward};
use crate::{Error, Result};

/// Which tokens of which windows are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Standard,
    Paper,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Standard => "standard",
            Protocol::Paper => "paper",
        }
    }
}

/// How to evaluate.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    pub seqlen: usize,
    /// Use at most this many text tokens (from the start); `None` = all.
    pub max_tokens: Option<usize>,
    pub protocol: Protocol,
    /// Tokens per forward chunk (whole windows, at least one); `None` = [`CHUNK_TOKENS`].
    pub chunk_tokens: Option<usize>,
    /// Simulated activation / KV quantization ([`FakeQuantTaps`]), for W·A· models.
    pub act_bits: Option<u32>,
    pub kv_bits: Option<u32>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            seqlen: 2048,
            max_tokens: None,
            protocol: Protocol::Standard,
            chunk_tokens: None,
            act_bits: None,
            kv_bits: None,
        }
    }
}

/// What an evaluation measured.
#[derive(Clone, Debug)]
pub struct EvalResult {
    pub ppl: f64,
    /// Mean NLL per scored token (nats).
    pub nll: f64,
    /// Tokens scored.
    pub tokens: usize,
    pub windows: usize,
    pub seqlen: usize,
    pub protocol: Protocol,
    /// Tokens in the whole text.
    pub text_tokens: usize,
    /// NLL of every scored token, window by window, in text order.
    pub token_nll: Vec<f32>,
    /// Perplexity of each window.
    pub window_ppl: Vec<f64>,
    /// Seconds in the forward (embedding to NLL).
    pub forward_seconds: f64,
}

/// The windows of `tokens` under `cfg` and the first scored target position of each.
pub struct Windows {
    pub ids: Vec<Vec<u32>>,
    /// Targets at positions `score_from .. seqlen` are scored (`≥ 1`).
    pub score_from: usize,
}

/// Cut `tokens` into windows (see the module doc). Too few tokens is an error that says how
/// many there are.
pub fn windows(tokens: &[u32], cfg: &EvalConfig, bos: Option<u32>) -> Result<Windows> {
    let l = cfg.seqlen;
    if l < 2 {
        return Err(Error::config(
            "--seqlen",
            format!("{l}: need at least 2 tokens"),
        ));
    }
    let total = cfg.max_tokens.map_or(tokens.len(), |m| m.min(tokens.len()));
    let text = &tokens[..total];
    let (ids, score_from): (Vec<Vec<u32>>, usize) = match cfg.protocol {
        Protocol::Standard => (text.chunks_exact(l).map(<[u32]>::to_vec).collect(), 1),
        Protocol::Paper => {
            let bos = bos.ok_or_else(|| {
                Error::config(
                    "--protocol",
                    "paper needs a BOS token, but neither config.json (bos_token_id) nor \
                     tokenizer_config.json (bos_token) names one",
                )
            })?;
            let w = text
                .chunks_exact(l - 1)
                .map(|c| std::iter::once(bos).chain(c.iter().copied()).collect())
                .collect();
            (w, l / 2)
        }
    };
    if ids.is_empty() {
        let need = match cfg.protocol {
            Protocol::Standard => l,
            Protocol::Paper => l - 1,
        };
        let limit = match cfg.max_tokens {
            Some(m) if m < tokens.len() => format!(" (limited to {m} by --max-tokens)"),
            _ => String::new(),
        };
        return Err(Error::config(
            "--data",
            format!(
                "the text has {} tokens{limit}, fewer than one window of {need} tokens \
                 (--seqlen {l}, protocol {})",
                tokens.len(),
                cfg.protocol.name()
            ),
        ));
    }
    Ok(Windows { ids, score_from })
}

/// Default tokens per forward chunk: GEMMs of 4096 columns run at full speed, and the
/// chunk's activations stay small enough to be recycled by the allocator instead of being
/// returned to the kernel and faulted in (zeroed) again at every linear.
pub const CHUNK_TOKENS: usize = 4096;

/// Whole windows (all of one length) concatenated into forward chunks of about
/// `chunk_tokens` (default [`CHUNK_TOKENS`]) tokens, at least one window each.
pub(crate) fn chunk_windows(windows: &[Vec<u32>], chunk_tokens: Option<usize>) -> Vec<Vec<u32>> {
    let seqlen = windows.first().map_or(1, Vec::len).max(1);
    let per = (chunk_tokens.unwrap_or(CHUNK_TOKENS) / seqlen).max(1);
    windows.chunks(per).map(|w| w.concat()).collect()
}

/// The embedded chunks (`hidden × tokens` each). Ids outside the vocabulary are an error
/// that names `flag` (where the tokens came from).
pub(crate) fn embed_chunks<B: Forward>(
    be: &B,
    m: &ModelDir,
    chunks: &[Vec<u32>],
    flag: &str,
) -> Result<Vec<B::Mat>> {
    let vocab = m.config.vocab_size;
    if let Some((i, &id)) = chunks
        .iter()
        .flatten()
        .enumerate()
        .find(|&(_, &id)| id as usize >= vocab)
    {
        return Err(Error::config(
            flag,
            format!("token {i} is id {id}, outside the vocabulary of {vocab}"),
        ));
    }
    let table = load_embedding(be, m)?;
    chunks
        .iter()
        .map(|ids| be.gather(&table, &be.upload_idx(ids)?))
        .collect()
}

/// Run every decoder block over `chunks` (each a concatenation of whole windows of
/// `seqlen` tokens) and return the final hidden states (before the final norm).
pub fn run_blocks<B: Forward>(
    be: &B,
    m: &ModelDir,
    chunks: &[Vec<u32>],
    seqlen: usize,
    quant: (Option<u32>, Option<u32>),
    progress: &mut dyn Progress,
) -> Result<Vec<B::Mat>> {
    let c = &m.config;
    c.check_seqlen(&super::config::config_path(&m.dir), seqlen)?;
    let nblocks = c.num_hidden_layers as u64;
    tick(progress, "embed", 0, nblocks)?;
    let mut streams = embed_chunks(be, m, chunks, "token ids")?;
    let rope = be.upload(c.head_dim, seqlen, &rope_table(&c.inv_freq(), seqlen))?;
    for i in 0..c.num_hidden_layers {
        tick(progress, "blocks", i as u64, nblocks)?;
        let block = Block::load(be, m, i)?;
        for s in streams.iter_mut() {
            let x = std::mem::replace(s, be.zeros(0, 0)?);
            let mut taps = FakeQuantTaps {
                be,
                act_bits: quant.0,
                kv_bits: quant.1,
                head_dim: c.head_dim,
                inner: NoTaps,
            };
            *s = block.forward(be, c, x, &rope, &mut taps)?;
        }
    }
    tick(progress, "blocks", nblocks, nblocks)?;
    Ok(streams)
}

/// Tokens per logits product: about 64 MiB of logits.
fn logit_tokens(vocab: usize) -> usize {
    ((16 << 20) / vocab.max(1)).clamp(1, 1024)
}

/// Perplexity of `tokens` (the whole text, tokenized) under `cfg`.
pub fn perplexity<B: Forward>(
    be: &B,
    m: &ModelDir,
    tokens: &[u32],
    bos: Option<u32>,
    cfg: &EvalConfig,
    progress: &mut dyn Progress,
) -> Result<EvalResult> {
    let t0 = Instant::now();
    let l = cfg.seqlen;
    let w = windows(tokens, cfg, bos)?;
    let chunks = chunk_windows(&w.ids, cfg.chunk_tokens);
    let streams = run_blocks(be, m, &chunks, l, (cfg.act_bits, cfg.kv_bits), progress)?;

    let head = Head::load(be, m)?;
    let vocab = m.config.vocab_size;
    let step = logit_tokens(vocab);
    let mut token_nll = Vec::new();
    let mut window_ppl = Vec::with_capacity(w.ids.len());
    let mut win_sum = 0f64;
    let (mut sum, mut count) = (0f64, 0usize);
    let nchunks = chunks.len() as u64;
    for (ci, (s, ids)) in streams.iter().zip(&chunks).enumerate() {
        tick(progress, "head", ci as u64, nchunks)?;
        let hidden = be.shape(s).0;
        let h = be.rmsnorm(s, &head.norm, hidden, m.config.rms_norm_eps)?;
        let n = ids.len();
        for c0 in (0..n).step_by(step) {
            let c1 = (c0 + step).min(n);
            // column t predicts token t + 1 of its window; a window's last column predicts
            // nothing (its target is a placeholder, ignored)
            let targets: Vec<u32> = (c0..c1)
                .map(|t| if (t + 1) % l == 0 { 0 } else { ids[t + 1] })
                .collect();
            let z = head.logits(be, &h, c0, c1)?;
            let nll = be.download(&be.nll(&z, &be.upload_idx(&targets)?)?)?;
            for (t, &v) in (c0..c1).zip(&nll) {
                let target_pos = t % l + 1;
                if target_pos < l && target_pos >= w.score_from {
                    token_nll.push(v);
                    sum += f64::from(v);
                    win_sum += f64::from(v);
                    count += 1;
                }
                if target_pos == l {
                    window_ppl.push((win_sum / (l - w.score_from) as f64).exp());
                    win_sum = 0.0;
                }
            }
        }
    }
    tick(progress, "head", nchunks, nchunks)?;
    if let Some(bad) = token_nll.iter().position(|v| !v.is_finite()) {
        return Err(Error::model(
            &m.dir,
            "forward",
            format!("non-finite NLL {} at scored token {bad}", token_nll[bad]),
        ));
    }
    let nll = sum / count as f64;
    Ok(EvalResult {
        ppl: nll.exp(),
        nll,
        tokens: count,
        windows: w.ids.len(),
        seqlen: l,
        protocol: cfg.protocol,
        text_tokens: tokens.len(),
        token_nll,
        window_ppl,
        forward_seconds: t0.elapsed().as_secs_f64(),
    })
}

/// FLOPs of a forward over `windows` windows of `seqlen` tokens: `2 · parameters · tokens`
/// for the linears and the lm_head (the embedding gather is free), plus causal attention
/// (`q·kᵀ` and `p·v` over keys `j ≤ t`: `4 · head_dim · L(L+1)/2` per head and window).
/// Norms, rope and softmax are not counted: this is the floor a GEMM-bound forward meets.
pub fn forward_flops(c: &super::ModelConfig, windows: usize, seqlen: usize) -> f64 {
    let tokens = (windows * seqlen) as f64;
    c.num_hidden_layers as f64 * block_flops(c, windows, seqlen, None)
        + 2.0 * (c.vocab_size * c.hidden_size) as f64 * tokens
}

/// FLOPs of one decoder block's forward over `windows` windows of `seqlen` tokens, up to the
/// input of `upto` (`None` = the whole block): `2 · params · tokens` of the linears passed,
/// plus causal attention `4 · head_dim · L(L+1)/2` per head and window once past q/k/v.
pub fn block_flops(
    c: &super::ModelConfig,
    windows: usize,
    seqlen: usize,
    upto: Option<super::llama::Site>,
) -> f64 {
    use super::llama::Site;
    let (h, q, kv, f) = (
        c.hidden_size as f64,
        (c.num_attention_heads * c.head_dim) as f64,
        (c.num_key_value_heads * c.head_dim) as f64,
        c.intermediate_size as f64,
    );
    let tokens = (windows * seqlen) as f64;
    let l = seqlen as f64;
    let attn = c.num_attention_heads as f64
        * windows as f64
        * 4.0
        * c.head_dim as f64
        * (l * (l + 1.0) / 2.0);
    // the parts in forward order, each with the site whose input follows it
    let parts = [
        (Site::O, 2.0 * h * (q + 2.0 * kv) * tokens + attn),
        (Site::GateUp, 2.0 * q * h * tokens),
        (Site::Down, 2.0 * h * 2.0 * f * tokens),
    ];
    let mut total = 0.0;
    if upto == Some(Site::Qkv) {
        return total;
    }
    for (next, flop) in parts {
        total += flop;
        if upto == Some(next) {
            return total;
        }
    }
    total + 2.0 * f * h * tokens
}

/// Logits of one sequence (`vocab × ids.len()`, column-major: column `t` is position `t`),
/// for tests against reference implementations.
pub fn logits<B: Forward>(
    be: &B,
    m: &ModelDir,
    ids: &[u32],
    progress: &mut dyn Progress,
) -> Result<Vec<f32>> {
    let streams = run_blocks(be, m, &[ids.to_vec()], ids.len(), (None, None), progress)?;
    let head = Head::load(be, m)?;
    let s = &streams[0];
    let h = be.rmsnorm(s, &head.norm, be.shape(s).0, m.config.rms_norm_eps)?;
    be.download(&head.logits(be, &h, 0, ids.len())?)
}
