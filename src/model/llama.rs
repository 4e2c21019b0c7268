//! The Llama-family decoder (Llama 2/3, SmolLM, Mistral, Qwen2, Qwen3), written once against
//! the [`Forward`] seam. Names mirror the checkpoint (`model.layers.{i}.self_attn.q_proj`);
//! each part has a short `load` and `forward`.
//!
//! One decoder block at a time is resident: [`Block::load`] converts its tensors from the
//! mapped file and uploads them; dropping the block frees them. The quantization pipeline
//! uses the same blocks and taps the inputs of every linear through [`Taps`].

use super::config::ModelConfig;
use super::files::ModelDir;
use crate::backend::{AttnSpec, Forward, Region};
use crate::Result;

/// Where a linear layer's input is seen (linears in one group share that input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    /// `q_proj`, `k_proj`, `v_proj` (the attention norm's output).
    Qkv,
    /// `o_proj` (the attention output).
    O,
    /// `gate_proj`, `up_proj` (the MLP norm's output).
    GateUp,
    /// `down_proj` (the SwiGLU product).
    Down,
}

/// Sees (and may change: the quantized stream fake-quantizes activations) the input of every
/// linear group of a block, in order. The default sees nothing.
pub trait Taps<M> {
    fn input(&mut self, site: Site, x: &mut M) -> Result<()> {
        let _ = (site, x);
        Ok(())
    }
    /// Sees (and may change) the keys (after rope) and values before attention.
    fn kv(&mut self, k: &mut M, v: &mut M) -> Result<()> {
        let _ = (k, v);
        Ok(())
    }
}

/// Per-token fake quantization of every linear's input (`act_bits`) and of K and V per head
/// (`kv_bits`), in front of another tap: how a quantized model's activations are simulated
/// (the quantization pipeline's quantized stream, and `qronos eval --act-bits`).
pub struct FakeQuantTaps<'b, B: Forward, T> {
    pub be: &'b B,
    pub act_bits: Option<u32>,
    pub kv_bits: Option<u32>,
    pub head_dim: usize,
    pub inner: T,
}

impl<B: Forward, T: Taps<B::Mat>> Taps<B::Mat> for FakeQuantTaps<'_, B, T> {
    fn input(&mut self, site: Site, x: &mut B::Mat) -> Result<()> {
        if let Some(bits) = self.act_bits {
            let rows = self.be.shape(x).0;
            self.be.fake_quant(x, rows, bits)?;
        }
        self.inner.input(site, x)
    }
    fn kv(&mut self, k: &mut B::Mat, v: &mut B::Mat) -> Result<()> {
        if let Some(bits) = self.kv_bits {
            self.be.fake_quant(k, self.head_dim, bits)?;
            self.be.fake_quant(v, self.head_dim, bits)?;
        }
        self.inner.kv(k, v)
    }
}

/// [`Taps`] that does nothing.
pub struct NoTaps;
impl<M> Taps<M> for NoTaps {}

/// The names and shapes (row-major, as in the file) of every tensor the config implies.
pub fn expected_tensors(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, q, kv, f) = (
        c.hidden_size,
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
        c.intermediate_size,
    );
    let mut v = vec![
        (
            "model.embed_tokens.weight".to_string(),
            vec![c.vocab_size, h],
        ),
        ("model.norm.weight".to_string(), vec![h]),
    ];
    if !c.tie_word_embeddings {
        v.push(("lm_head.weight".to_string(), vec![c.vocab_size, h]));
    }
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut add = |n: &str, s: Vec<usize>| v.push((format!("{p}.{n}"), s));
        add("input_layernorm.weight", vec![h]);
        add("post_attention_layernorm.weight", vec![h]);
        for (n, out, inp, bias) in [
            ("self_attn.q_proj", q, h, c.qkv_bias),
            ("self_attn.k_proj", kv, h, c.qkv_bias),
            ("self_attn.v_proj", kv, h, c.qkv_bias),
            ("self_attn.o_proj", h, q, c.o_bias),
            ("mlp.gate_proj", f, h, c.mlp_bias),
            ("mlp.up_proj", f, h, c.mlp_bias),
            ("mlp.down_proj", h, f, c.mlp_bias),
        ] {
            add(&format!("{n}.weight"), vec![out, inp]);
            if bias {
                add(&format!("{n}.bias"), vec![out]);
            }
        }
        if c.qk_norm {
            add("self_attn.q_norm.weight", vec![c.head_dim]);
            add("self_attn.k_norm.weight", vec![c.head_dim]);
        }
    }
    v
}

/// `y = W x + b`. `w` is the checkpoint's row-major `[out, in]` tensor uploaded as it is,
/// i.e. the column-major `in × out` matrix `Wᵀ`; the product takes it transposed.
pub struct Linear<M> {
    pub w: M,
    pub b: Option<M>,
    pub out_features: usize,
    pub in_features: usize,
}

impl<M> Linear<M> {
    pub fn load<B: Forward<Mat = M>>(
        be: &B,
        m: &ModelDir,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<Self> {
        let w = m.tensor(&format!("{name}.weight"), &[out, inp])?;
        let w = be.upload(inp, out, &w)?;
        let b = if bias {
            let b = m.tensor(&format!("{name}.bias"), &[out])?;
            Some(be.upload(out, 1, &b)?)
        } else {
            None
        };
        Ok(Linear {
            w,
            b,
            out_features: out,
            in_features: inp,
        })
    }

    /// `x` is `in × T`; returns `out × T`.
    pub fn forward<B: Forward<Mat = M>>(&self, be: &B, x: &M) -> Result<M> {
        let (rows, t) = be.shape(x);
        assert_eq!(rows, self.in_features, "linear: input rows");
        let mut y = be.zeros(self.out_features, t)?;
        be.gemm(
            &mut y,
            Region::all(self.out_features, t),
            1.0,
            &self.w,
            Region::all(self.in_features, self.out_features),
            true,
            x,
            Region::all(rows, t),
            false,
            0.0,
        )?;
        if let Some(b) = &self.b {
            be.add_bias(&mut y, b)?;
        }
        Ok(y)
    }
}

fn norm<B: Forward>(be: &B, m: &ModelDir, name: &str, dim: usize) -> Result<B::Mat> {
    let w = m.tensor(name, &[dim])?;
    be.upload(dim, 1, &w)
}

/// `model.layers.{i}.self_attn`.
pub struct Attention<M> {
    pub q_proj: Linear<M>,
    pub k_proj: Linear<M>,
    pub v_proj: Linear<M>,
    pub o_proj: Linear<M>,
    pub q_norm: Option<M>,
    pub k_norm: Option<M>,
}

/// `model.layers.{i}.mlp`.
pub struct Mlp<M> {
    pub gate_proj: Linear<M>,
    pub up_proj: Linear<M>,
    pub down_proj: Linear<M>,
}

/// `model.layers.{i}`.
pub struct Block<M> {
    pub index: usize,
    pub input_layernorm: M,
    pub self_attn: Attention<M>,
    pub post_attention_layernorm: M,
    pub mlp: Mlp<M>,
}

impl<M> Block<M> {
    pub fn load<B: Forward<Mat = M>>(be: &B, m: &ModelDir, index: usize) -> Result<Self> {
        let c = &m.config;
        let p = format!("model.layers.{index}");
        let (h, q, kv, f) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
            c.intermediate_size,
        );
        let lin =
            |n: &str, out, inp, bias| Linear::load(be, m, &format!("{p}.{n}"), out, inp, bias);
        let qk_norm = |n: &str| -> Result<Option<M>> {
            c.qk_norm
                .then(|| norm(be, m, &format!("{p}.self_attn.{n}.weight"), c.head_dim))
                .transpose()
        };
        Ok(Block {
            index,
            input_layernorm: norm(be, m, &format!("{p}.input_layernorm.weight"), h)?,
            self_attn: Attention {
                q_proj: lin("self_attn.q_proj", q, h, c.qkv_bias)?,
                k_proj: lin("self_attn.k_proj", kv, h, c.qkv_bias)?,
                v_proj: lin("self_attn.v_proj", kv, h, c.qkv_bias)?,
                o_proj: lin("self_attn.o_proj", h, q, c.o_bias)?,
                q_norm: qk_norm("q_norm")?,
                k_norm: qk_norm("k_norm")?,
            },
            post_attention_layernorm: norm(
                be,
                m,
                &format!("{p}.post_attention_layernorm.weight"),
                h,
            )?,
            mlp: Mlp {
                gate_proj: lin("mlp.gate_proj", f, h, c.mlp_bias)?,
                up_proj: lin("mlp.up_proj", f, h, c.mlp_bias)?,
                down_proj: lin("mlp.down_proj", h, f, c.mlp_bias)?,
            },
        })
    }

    /// One block over `x` (`hidden × T`, whole sequences of `rope`'s length): attention and
    /// MLP with their residuals. Consumes `x` (it becomes the residual stream).
    pub fn forward<B: Forward<Mat = M>>(
        &self,
        be: &B,
        c: &ModelConfig,
        x: M,
        rope: &M,
        taps: &mut dyn Taps<M>,
    ) -> Result<M> {
        Ok(self
            .forward_to(be, c, x, rope, taps, None)?
            .expect("runs to the end without a stop site"))
    }

    /// [`Block::forward`] that stops right after the tap at `stop` (returning `None`): the
    /// calibration pipeline needs the input of one linear group and nothing after it.
    pub fn forward_to<B: Forward<Mat = M>>(
        &self,
        be: &B,
        c: &ModelConfig,
        mut x: M,
        rope: &M,
        taps: &mut dyn Taps<M>,
        stop: Option<Site>,
    ) -> Result<Option<M>> {
        let (hidden, t) = be.shape(&x);
        let seqlen = be.shape(rope).1;
        let all = Region::all(hidden, t);
        let a = &self.self_attn;

        let mut h = be.rmsnorm(&x, &self.input_layernorm, hidden, c.rms_norm_eps)?;
        taps.input(Site::Qkv, &mut h)?;
        if stop == Some(Site::Qkv) {
            return Ok(None);
        }
        let mut q = a.q_proj.forward(be, &h)?;
        let mut k = a.k_proj.forward(be, &h)?;
        let mut v = a.v_proj.forward(be, &h)?;
        drop(h);
        if let (Some(qn), Some(kn)) = (&a.q_norm, &a.k_norm) {
            q = be.rmsnorm(&q, qn, c.head_dim, c.rms_norm_eps)?;
            k = be.rmsnorm(&k, kn, c.head_dim, c.rms_norm_eps)?;
        }
        be.rope(&mut q, rope, c.head_dim)?;
        be.rope(&mut k, rope, c.head_dim)?;
        taps.kv(&mut k, &mut v)?;
        let spec = AttnSpec {
            n_heads: c.num_attention_heads,
            n_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            seqlen,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
        };
        let mut o = be.attention(&q, &k, &v, &spec)?;
        drop((q, k, v));
        taps.input(Site::O, &mut o)?;
        if stop == Some(Site::O) {
            return Ok(None);
        }
        let o = a.o_proj.forward(be, &o)?;
        be.axpy(&mut x, all, 1.0, &o, all, None)?;
        drop(o);

        let mut h = be.rmsnorm(&x, &self.post_attention_layernorm, hidden, c.rms_norm_eps)?;
        taps.input(Site::GateUp, &mut h)?;
        if stop == Some(Site::GateUp) {
            return Ok(None);
        }
        let mut g = self.mlp.gate_proj.forward(be, &h)?;
        let u = self.mlp.up_proj.forward(be, &h)?;
        drop(h);
        be.silu_mul(&mut g, &u)?;
        drop(u);
        taps.input(Site::Down, &mut g)?;
        if stop == Some(Site::Down) {
            return Ok(None);
        }
        let d = self.mlp.down_proj.forward(be, &g)?;
        be.axpy(&mut x, all, 1.0, &d, all, None)?;
        Ok(Some(x))
    }

    /// The linear `module` (`"self_attn.q_proj"`, …) of this block.
    pub fn linear_mut(&mut self, module: &str) -> &mut Linear<M> {
        match module {
            "self_attn.q_proj" => &mut self.self_attn.q_proj,
            "self_attn.k_proj" => &mut self.self_attn.k_proj,
            "self_attn.v_proj" => &mut self.self_attn.v_proj,
            "self_attn.o_proj" => &mut self.self_attn.o_proj,
            "mlp.gate_proj" => &mut self.mlp.gate_proj,
            "mlp.up_proj" => &mut self.mlp.up_proj,
            "mlp.down_proj" => &mut self.mlp.down_proj,
            other => panic!("no linear {other} in a block"),
        }
    }
}

impl Site {
    /// The linears that read this input, in checkpoint names relative to the block.
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            Site::Qkv => &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
            Site::O => &["self_attn.o_proj"],
            Site::GateUp => &["mlp.gate_proj", "mlp.up_proj"],
            Site::Down => &["mlp.down_proj"],
        }
    }

    /// True-sequential order.
    pub const ALL: [Site; 4] = [Site::Qkv, Site::O, Site::GateUp, Site::Down];
}

/// The parts outside the blocks: embedding, final norm, lm_head (the embedding when tied).
pub struct Head<M> {
    pub norm: M,
    /// `hidden × vocab` (the row-major `[vocab, hidden]` tensor).
    pub lm_head: M,
}

/// The embedding table `hidden × vocab`.
pub fn load_embedding<B: Forward>(be: &B, m: &ModelDir) -> Result<B::Mat> {
    let c = &m.config;
    let e = m.tensor("model.embed_tokens.weight", &[c.vocab_size, c.hidden_size])?;
    be.upload(c.hidden_size, c.vocab_size, &e)
}

impl<M> Head<M> {
    pub fn load<B: Forward<Mat = M>>(be: &B, m: &ModelDir) -> Result<Self> {
        let c = &m.config;
        let name = if c.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let w = m.tensor(name, &[c.vocab_size, c.hidden_size])?;
        Ok(Head {
            norm: norm(be, m, "model.norm.weight", c.hidden_size)?,
            lm_head: be.upload(c.hidden_size, c.vocab_size, &w)?,
        })
    }

    /// Logits (`vocab × (t1 − t0)`) of columns `[t0, t1)` of the normed stream `h`.
    pub fn logits<B: Forward<Mat = M>>(&self, be: &B, h: &M, t0: usize, t1: usize) -> Result<M> {
        let (hidden, vocab) = be.shape(&self.lm_head);
        let n = t1 - t0;
        let mut z = be.zeros(vocab, n)?;
        be.gemm(
            &mut z,
            Region::all(vocab, n),
            1.0,
            &self.lm_head,
            Region::all(hidden, vocab),
            true,
            h,
            Region::cols(hidden, t0, t1),
            false,
            0.0,
        )?;
        Ok(z)
    }
}
