//! The model pipeline (`qronos quantize`): every linear of every decoder block, one block
//! resident at a time, with sequential two-stream calibration (DESIGN §2).
//!
//! Data flow: the calibration windows are embedded once into the **quantized stream** (and,
//! with [`FloatStream::Model`], a second **float stream**). For each block:
//! 1. load the block twice — the float block `F` and the block `Q` whose linears are replaced
//!    as they are quantized;
//! 2. for each input group in true-sequential order (q/k/v → o → gate/up → down):
//!    - `X̃` = the group's input in `Q` fed with the quantized stream (everything quantized so
//!      far already acts on it), `X` = the group's input in `F` fed with the quantized stream
//!      (`Block`, the reference's rule) or with the float stream (`Model`);
//!    - `H = X̃ᵀX̃/N`, `G = XᵀX̃/N` (and `D` for exact objectives) accumulated on the backend
//!      from the device-resident activations ([`Backend::gram_update_mat`]), once per group;
//!    - each linear of the group quantized from those Grams, its dequantized weights put into
//!      `Q`, the result handed to the [`Sink`];
//! 3. advance the streams through `Q` (and `F`), drop both blocks.
//!
//! With `Block` the q/k/v input is the same in both blocks (nothing of this block is
//! quantized yet), so `X̃ = X` there and no `G` / `D` is formed — unless `act_bits` is set:
//! then every linear's input in the quantized stream is fake-quantized per token (and with
//! `kv_bits` the keys and values per token and head), which is part of what Qronos corrects.
//!
//! [`Backend::gram_update_mat`]: crate::backend::Backend::gram_update_mat

use std::time::Instant;

use super::eval::{block_flops, chunk_windows, embed_chunks};
use super::files::ModelDir;
use super::llama::{Block, FakeQuantTaps, Site, Taps};
use crate::algo::{
    grams_diag, quantize_from_grams, tick, LayerResult, Objectives, Progress, QuantConfig,
};
use crate::backend::{forward::rope_table, Forward};
use crate::Result;

/// Where the float inputs `X` come from (DESIGN §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatStream {
    /// The float block fed with the quantized model's block input (the reference's rule):
    /// `X` and `X̃` differ only by what is quantized inside the block.
    Block,
    /// A second stream carries the float model through all blocks, so `G` also corrects the
    /// error accumulated in earlier blocks.
    Model,
}

impl FloatStream {
    pub fn name(self) -> &'static str {
        match self {
            FloatStream::Block => "block",
            FloatStream::Model => "model",
        }
    }
}

/// The pipeline's settings (the layer settings are applied to every linear).
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub layer: QuantConfig,
    pub float_stream: FloatStream,
    /// Tokens per forward chunk (whole windows); `None` = [`CHUNK_TOKENS`](super::eval::CHUNK_TOKENS).
    pub chunk_tokens: Option<usize>,
    /// Per-token symmetric fake quantization of every linear's input in the quantized stream
    /// (`--act-bits`), and of the keys and values per head (`--kv-bits`).
    pub act_bits: Option<u32>,
    pub kv_bits: Option<u32>,
    /// Bytes of float-block inputs kept per block; `None` = [`FLOAT_CACHE_BYTES`], `Some(0)`
    /// recomputes them for every group (same results, more forwards, less memory).
    pub float_cache_bytes: Option<usize>,
    /// Bytes of calibration streams (all chunks of both) that may stay on the backend's
    /// device; larger streams are kept in host memory and each chunk is uploaded when it is
    /// used (and downloaded again after it advances). `None` = no limit (always resident;
    /// on the CPU backend the device is host memory).
    pub stream_device_bytes: Option<usize>,
}

/// What the pipeline measured for one linear.
#[derive(Clone, Debug)]
pub struct LinearReport {
    pub block: usize,
    /// Relative to the block, e.g. `self_attn.q_proj`.
    pub module: String,
    pub m: usize,
    pub d: usize,
    pub objective: Option<Objectives>,
    pub damping: Option<f64>,
    pub retries: u32,
    pub fallback: Option<String>,
    pub seconds: f64,
}

/// Wall-clock seconds per pipeline stage (summed over blocks).
#[derive(Clone, Copy, Debug, Default)]
pub struct StageSeconds {
    pub embed: f64,
    /// Block weights converted and uploaded.
    pub load: f64,
    /// Forwards to the group inputs (both streams).
    pub capture: f64,
    pub gram: f64,
    pub quantize: f64,
    /// Handing results to the sink (the writer).
    pub sink: f64,
    /// Advancing the streams through the quantized (and float) block.
    pub advance: f64,
}

/// FLOPs per pipeline stage (summed over blocks), counted from the shapes as the stages run:
/// forwards by [`super::eval::block_flops`]; Grams as `T·d²` per symmetric
/// product (H, D) and `2·T·d²` for G; quantization by [`crate::algo::quantize_flops`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StageFlops {
    pub capture: f64,
    pub gram: f64,
    pub quantize: f64,
    pub advance: f64,
}

impl StageFlops {
    pub fn total(&self) -> f64 {
        self.capture + self.gram + self.quantize + self.advance
    }
}

/// What the pipeline did.
#[derive(Clone, Debug, Default)]
pub struct PipelineReport {
    pub linears: Vec<LinearReport>,
    pub seconds: StageSeconds,
    pub flops: StageFlops,
    pub calibration_tokens: usize,
    /// Whether the calibration streams were kept in host memory
    /// ([`PipelineConfig::stream_device_bytes`]).
    pub streams_on_host: bool,
}

/// Receives each quantized linear as soon as it is done (the checkpoint writer).
pub trait Sink {
    /// `name` is the full checkpoint name without `.weight`
    /// (`model.layers.3.self_attn.q_proj`).
    fn linear(&mut self, block: usize, name: &str, r: &LayerResult) -> Result<()>;
}

/// Takes the input of one linear group out of a forward that stops there.
struct Grab<M> {
    site: Site,
    empty: Option<M>,
    got: Option<M>,
}

impl<M> Taps<M> for Grab<M> {
    fn input(&mut self, site: Site, x: &mut M) -> Result<()> {
        if site == self.site {
            let empty = self.empty.take().expect("one tap per forward");
            self.got = Some(std::mem::replace(x, empty));
        }
        Ok(())
    }
}

/// Copies of the inputs of every linear group seen by one full forward.
struct Keep<'b, B: Forward> {
    be: &'b B,
    got: Vec<(Site, B::Mat)>,
}

impl<B: Forward> Taps<B::Mat> for Keep<'_, B> {
    fn input(&mut self, site: Site, x: &mut B::Mat) -> Result<()> {
        self.got.push((site, self.be.permute(x, None, None)?));
        Ok(())
    }
}

/// A calibration stream in chunks of whole windows: on the backend, or (over the device
/// budget) in host memory, uploaded one chunk at a time.
struct Stream<M> {
    chunks: Vec<Chunk<M>>,
}

enum Chunk<M> {
    Device(M),
    Host {
        rows: usize,
        cols: usize,
        data: Vec<f32>,
    },
}

/// A chunk ready for use: borrowed when it is resident, uploaded for the moment otherwise.
enum Held<'a, M> {
    Borrowed(&'a M),
    Owned(M),
}

impl<M> std::ops::Deref for Held<'_, M> {
    type Target = M;
    fn deref(&self) -> &M {
        match self {
            Held::Borrowed(m) => m,
            Held::Owned(m) => m,
        }
    }
}

impl<M> Stream<M> {
    fn new<B: Forward<Mat = M>>(be: &B, chunks: Vec<M>, host: bool) -> Result<Self> {
        let chunks = chunks
            .into_iter()
            .map(|x| Chunk::new(be, x, host))
            .collect::<Result<_>>()?;
        Ok(Stream { chunks })
    }

    fn len(&self) -> usize {
        self.chunks.len()
    }

    fn get<B: Forward<Mat = M>>(&self, be: &B, i: usize) -> Result<Held<'_, M>> {
        Ok(match &self.chunks[i] {
            Chunk::Device(m) => Held::Borrowed(m),
            Chunk::Host { rows, cols, data } => Held::Owned(be.upload(*rows, *cols, data)?),
        })
    }

    /// Chunk `i` taken out for a forward that consumes it (put back with [`Stream::put`]).
    fn take<B: Forward<Mat = M>>(&mut self, be: &B, i: usize) -> Result<M> {
        let empty = Chunk::Host {
            rows: 0,
            cols: 0,
            data: Vec::new(),
        };
        match std::mem::replace(&mut self.chunks[i], empty) {
            Chunk::Device(m) => Ok(m),
            Chunk::Host { rows, cols, data } => be.upload(rows, cols, &data),
        }
    }

    fn put<B: Forward<Mat = M>>(&mut self, be: &B, i: usize, x: M, host: bool) -> Result<()> {
        self.chunks[i] = Chunk::new(be, x, host)?;
        Ok(())
    }

    fn copy<B: Forward<Mat = M>>(&self, be: &B) -> Result<Self> {
        let chunks = (0..self.len())
            .map(|i| match &self.chunks[i] {
                Chunk::Device(m) => Ok(Chunk::Device(be.permute(m, None, None)?)),
                Chunk::Host { rows, cols, data } => Ok(Chunk::Host {
                    rows: *rows,
                    cols: *cols,
                    data: data.clone(),
                }),
            })
            .collect::<Result<_>>()?;
        Ok(Stream { chunks })
    }
}

impl<M> Chunk<M> {
    fn new<B: Forward<Mat = M>>(be: &B, x: M, host: bool) -> Result<Self> {
        Ok(if host {
            let (rows, cols) = be.shape(&x);
            Chunk::Host {
                rows,
                cols,
                data: be.download(&x)?,
            }
        } else {
            Chunk::Device(x)
        })
    }
}

/// Bytes of float-block inputs the pipeline may keep between the groups of one block (one
/// float forward per chunk then gives `X` for all four groups).
pub const FLOAT_CACHE_BYTES: usize = 512 << 20;

/// The float block `F` never changes while a block is quantized, so one forward per chunk
/// gives `X` for all four groups (instead of one partial forward per group), when they fit
/// [`FLOAT_CACHE_BYTES`]. Returns, per chunk, the four inputs in `Site::ALL` order and the
/// block's output. `None` when they do not fit (then each group recomputes its `X`).
#[allow(clippy::type_complexity)]
fn float_inputs<B: Forward>(
    be: &B,
    fblock: &Block<B::Mat>,
    m: &ModelDir,
    src: &Stream<B::Mat>,
    rope: &B::Mat,
    budget: usize,
) -> Result<Option<Vec<(Vec<B::Mat>, B::Mat)>>> {
    let c = &m.config;
    let per_token = 3 * c.hidden_size + c.num_attention_heads * c.head_dim + c.intermediate_size;
    let tokens: usize = (0..src.len())
        .map(|i| match &src.chunks[i] {
            Chunk::Device(x) => be.shape(x).1,
            Chunk::Host { cols, .. } => *cols,
        })
        .sum();
    if per_token * tokens * 4 > budget {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(src.len());
    for i in 0..src.len() {
        let mut keep = Keep {
            be,
            got: Vec::new(),
        };
        let x = be.permute(&*src.get(be, i)?, None, None)?;
        let y = fblock.forward(be, c, x, rope, &mut keep)?;
        let sites: Vec<Site> = keep.got.iter().map(|(s, _)| *s).collect();
        assert_eq!(sites, Site::ALL, "one tap per group, in order");
        out.push((keep.got.into_iter().map(|(_, x)| x).collect(), y));
    }
    Ok(Some(out))
}

/// The input of `site` in `block` for the stream chunk `x` (kept).
/// `quant`: the quantized stream's (act_bits, kv_bits), applied on the way.
fn capture<B: Forward>(
    be: &B,
    block: &Block<B::Mat>,
    m: &ModelDir,
    x: &B::Mat,
    rope: &B::Mat,
    site: Site,
    quant: (Option<u32>, Option<u32>),
) -> Result<B::Mat> {
    let grab = Grab {
        site,
        empty: Some(be.zeros(0, 0)?),
        got: None,
    };
    let mut taps = FakeQuantTaps {
        be,
        act_bits: quant.0,
        kv_bits: quant.1,
        head_dim: m.config.head_dim,
        inner: grab,
    };
    let x = be.permute(x, None, None)?;
    block.forward_to(be, &m.config, x, rope, &mut taps, Some(site))?;
    Ok(taps.inner.got.expect("the forward reaches its stop site"))
}

/// Quantize every linear of `m` with calibration `windows` (all of one length). See the
/// module docs. Progress stages: `"blocks"` (done / total blocks) and `"linears"`.
pub fn quantize_model<B: Forward>(
    be: &B,
    m: &ModelDir,
    windows: &[Vec<u32>],
    cfg: &PipelineConfig,
    sink: &mut dyn Sink,
    progress: &mut dyn Progress,
) -> Result<PipelineReport> {
    cfg.layer.validate()?;
    let c = &m.config;
    let seqlen = windows.first().map_or(0, Vec::len);
    assert!(
        seqlen > 0 && windows.iter().all(|w| w.len() == seqlen),
        "calibration windows must be non-empty and of one length"
    );
    c.check_seqlen(&super::config::config_path(&m.dir), seqlen)?;
    let mut rep = PipelineReport {
        calibration_tokens: windows.len() * seqlen,
        ..Default::default()
    };
    let chunks = chunk_windows(windows, cfg.chunk_tokens);

    let t0 = Instant::now();
    let nstreams = 1 + (cfg.float_stream == FloatStream::Model) as usize;
    let stream_bytes = nstreams * rep.calibration_tokens * c.hidden_size * 4;
    let host = cfg.stream_device_bytes.is_some_and(|b| stream_bytes > b);
    if host {
        log::info!(
            "calibration streams ({} MiB) exceed the device budget: kept in host memory",
            stream_bytes >> 20
        );
    }
    rep.streams_on_host = host;
    let mut xq = Stream::new(be, embed_chunks(be, m, &chunks, "--calib")?, host)?;
    let mut xf = match cfg.float_stream {
        FloatStream::Block => None,
        FloatStream::Model => Some(xq.copy(be)?),
    };
    let rope = be.upload(c.head_dim, seqlen, &rope_table(&c.inv_freq(), seqlen))?;
    rep.seconds.embed = t0.elapsed().as_secs_f64();

    let nblocks = c.num_hidden_layers;
    let nlinears = (nblocks * 7) as u64;
    for b in 0..nblocks {
        tick(progress, "blocks", b as u64, nblocks as u64)?;
        let t0 = Instant::now();
        let fblock = Block::load(be, m, b)?;
        let mut qblock = Block::load(be, m, b)?;
        rep.seconds.load += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let budget = cfg.float_cache_bytes.unwrap_or(FLOAT_CACHE_BYTES);
        let mut cache = float_inputs(be, &fblock, m, xf.as_ref().unwrap_or(&xq), &rope, budget)?;
        if cache.is_some() {
            rep.flops.capture += block_flops(c, windows.len(), seqlen, None);
        }
        be.finish()?;
        rep.seconds.capture += t0.elapsed().as_secs_f64();
        for (k, site) in Site::ALL.into_iter().enumerate() {
            let cached: Option<Vec<&B::Mat>> = cache
                .as_ref()
                .map(|v| v.iter().map(|(x, _)| &x[k]).collect());
            quantize_group(
                be,
                m,
                cfg,
                b,
                site,
                &fblock,
                &mut qblock,
                &xq,
                xf.as_ref(),
                cached,
                &rope,
                sink,
                &mut rep,
                progress,
                nlinears,
            )?;
        }
        let t0 = Instant::now();
        let float_advance = xf.is_some() && cache.is_none();
        rep.flops.advance +=
            (1 + float_advance as usize) as f64 * block_flops(c, windows.len(), seqlen, None);
        for i in 0..xq.len() {
            let x = xq.take(be, i)?;
            let mut taps = FakeQuantTaps {
                be,
                act_bits: cfg.act_bits,
                kv_bits: cfg.kv_bits,
                head_dim: c.head_dim,
                inner: super::llama::NoTaps,
            };
            let y = qblock.forward(be, c, x, &rope, &mut taps)?;
            xq.put(be, i, y, host)?;
        }
        if let Some(xf) = xf.as_mut() {
            match cache.take() {
                // the float block's outputs were computed along with its inputs
                Some(v) => {
                    for (i, (_, y)) in v.into_iter().enumerate() {
                        xf.put(be, i, y, host)?;
                    }
                }
                None => {
                    for i in 0..xf.len() {
                        let x = xf.take(be, i)?;
                        let y = fblock.forward(be, c, x, &rope, &mut super::llama::NoTaps)?;
                        xf.put(be, i, y, host)?;
                    }
                }
            }
        }
        be.finish()?;
        rep.seconds.advance += t0.elapsed().as_secs_f64();
    }
    tick(progress, "blocks", nblocks as u64, nblocks as u64)?;
    Ok(rep)
}

/// The sequence length of a rope table (`head_dim × seqlen`).
fn rope_len<B: Forward>(be: &B, rope: &B::Mat) -> usize {
    be.shape(rope).1
}

/// One input group of block `b`: Grams from both streams, then each of its linears.
#[allow(clippy::too_many_arguments)]
fn quantize_group<B: Forward>(
    be: &B,
    m: &ModelDir,
    cfg: &PipelineConfig,
    b: usize,
    site: Site,
    fblock: &Block<B::Mat>,
    qblock: &mut Block<B::Mat>,
    xq: &Stream<B::Mat>,
    xf: Option<&Stream<B::Mat>>,
    cached: Option<Vec<&B::Mat>>,
    rope: &B::Mat,
    sink: &mut dyn Sink,
    rep: &mut PipelineReport,
    progress: &mut dyn Progress,
    nlinears: u64,
) -> Result<()> {
    let lc = &cfg.layer;
    let needs_data = lc.method != crate::Method::Rtn || lc.objectives;
    // q/k/v under the block rule: both blocks see the same input, X̃ = X exactly (unless the
    // quantized stream fake-quantizes it)
    let same =
        site == Site::Qkv && cfg.float_stream == FloatStream::Block && cfg.act_bits.is_none();
    let seqlen = rope_len(be, rope);
    let windows = rep.calibration_tokens / seqlen;
    let grams = if needs_data {
        // the quantized stream's partial forward, and the float one unless cached or equal
        let partial = block_flops(&m.config, windows, seqlen, Some(site));
        rep.flops.capture += partial * (1 + (!same && cached.is_none()) as usize) as f64;
        let mut acc = None;
        for ci in 0..xq.len() {
            let t0 = Instant::now();
            let x_q = xq.get(be, ci)?;
            let xt = capture(be, qblock, m, &x_q, rope, site, (cfg.act_bits, cfg.kv_bits))?;
            let owned;
            let x: Option<&B::Mat> = if same {
                None
            } else if let Some(c) = &cached {
                Some(c[ci])
            } else {
                owned = match xf {
                    None => capture(be, fblock, m, &x_q, rope, site, (None, None))?,
                    Some(f) => capture(be, fblock, m, &*f.get(be, ci)?, rope, site, (None, None))?,
                };
                Some(&owned)
            };
            drop(x_q);
            be.finish()?;
            rep.seconds.capture += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            let (d, t) = be.shape(&xt);
            let products = 1 + if same { 0 } else { 2 + lc.objectives as usize };
            rep.flops.gram += (products * t * d * d) as f64;
            let acc = match &mut acc {
                Some(a) => a,
                None => acc.insert(be.gram_init(d, !same, lc.objectives && !same)?),
            };
            match x {
                None => be.gram_update_mat(acc, &xt, None)?,
                Some(x) => be.gram_update_mat(acc, x, Some(&xt))?,
            }
            be.finish()?;
            rep.seconds.gram += t0.elapsed().as_secs_f64();
        }
        let mut acc = acc.expect("at least one chunk");
        let t0 = Instant::now();
        be.gram_finish(&mut acc)?;
        let diag = grams_diag(be, &acc)?;
        rep.seconds.gram += t0.elapsed().as_secs_f64();
        Some((acc, diag))
    } else {
        None
    };
    for module in site.modules() {
        let t0 = Instant::now();
        let name = format!("model.layers.{b}.{module}");
        let lin = qblock.linear_mut(module);
        let (out, inp) = (lin.out_features, lin.in_features);
        let w = m.tensor(&format!("{name}.weight"), &[out, inp])?;
        let r = match &grams {
            Some((acc, diag)) => {
                quantize_from_grams(be, lc, &w, out, inp, acc, diag, &mut crate::NoProgress)?
            }
            None => {
                let input = crate::LayerInput {
                    w: &w,
                    m: out,
                    d: inp,
                    calib: crate::Calibration::Tokens {
                        x: &[],
                        xq: None,
                        n: 0,
                    },
                };
                crate::quantize_layer(be, lc, &input, &mut crate::NoProgress)?
            }
        };
        lin.w = be.upload(inp, out, &r.q)?;
        let secs = t0.elapsed().as_secs_f64();
        rep.seconds.quantize += secs;
        rep.flops.quantize += crate::algo::quantize_flops(lc, out, inp);
        let t1 = Instant::now();
        sink.linear(b, &name, &r)?;
        rep.seconds.sink += t1.elapsed().as_secs_f64();
        if let Some(f) = &r.fallback {
            log::warn!("{name}: {f}");
        }
        rep.linears.push(LinearReport {
            block: b,
            module: module.to_string(),
            m: out,
            d: inp,
            objective: r.objective,
            damping: r.damping,
            retries: r.retries,
            fallback: r.fallback.clone(),
            seconds: secs,
        });
        tick(progress, "linears", rep.linears.len() as u64, nlinears)?;
    }
    Ok(())
}
