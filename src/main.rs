//! The `qronos` binary: a thin shell over the library (flags → config, progress, JSON, exit
//! codes).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use serde_json::json;

use qronos::backend::cpu::CpuBackend;
use qronos::backend::gpu::{self, AdapterChoice, GpuBackend};
use qronos::backend::Backend;
use qronos::io::case::Case;
use qronos::io::{write_atomic, OutTensor, SafetensorsFile};
use qronos::{quantize_layer, LayerResult, Progress, QuantConfig};

use cli::{Cli, Command, DeviceArg, EvalArgs, LayerArgs, QuantizeArgs, SynthArgs};

/// Transparent huge pages for the big matrices (see `qronos::alloc`).
#[global_allocator]
static ALLOC: qronos::alloc::HugePages = qronos::alloc::HugePages;

fn main() -> ExitCode {
    qronos::alloc::keep_freed_memory();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Layer(args) => layer(&args),
        Command::Eval(args) => eval(&args),
        Command::Quantize(args) => quantize(&args),
        Command::Devices => devices(),
        Command::Synth(args) => synth(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Progress on stderr at `info` level (`RUST_LOG=info`), at most a few lines per stage.
/// Progress on stderr: a live status line when stderr is a terminal (stdout stays one JSON
/// line for tools), and `info` log lines at 25 % steps (`RUST_LOG=info`).
struct LogProgress {
    last: Option<(String, u64)>,
    /// Live bars (indicatif) when stderr is a terminal: one per stage, with rate and ETA.
    bars: Option<(
        indicatif::MultiProgress,
        Vec<(String, indicatif::ProgressBar)>,
    )>,
}

impl LogProgress {
    fn new() -> Self {
        LogProgress {
            last: None,
            bars: std::io::stderr()
                .is_terminal()
                .then(|| (indicatif::MultiProgress::new(), Vec::new())),
        }
    }

    /// Clears the bars before the result is printed.
    fn done(&self) {
        if let Some((multi, _)) = &self.bars {
            let _ = multi.clear();
        }
    }

    /// A line on stderr that does not tear the bars.
    fn println(&self, line: &str) {
        match &self.bars {
            Some((multi, _)) => multi.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Progress for LogProgress {
    fn update(&mut self, stage: &str, done: u64, total: u64) -> bool {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if let Some((multi, bars)) = &mut self.bars {
            let bar = match bars.iter().position(|(s, _)| s == stage) {
                Some(i) => &bars[i].1,
                None => {
                    let b = multi.add(indicatif::ProgressBar::new(total));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} ETA {eta}",
                        )
                        .expect("valid template"),
                    );
                    b.set_prefix(stage.to_string());
                    bars.push((stage.to_string(), b));
                    &bars.last().expect("just pushed").1
                }
            };
            bar.set_length(total);
            bar.set_position(done);
        }
        let bucket = pct / 25;
        if self.last.as_ref() != Some(&(stage.to_string(), bucket)) {
            log::info!("{stage}: {done}/{total} ({pct}%)");
            self.last = Some((stage.to_string(), bucket));
        }
        true
    }
}

fn layer(args: &LayerArgs) -> anyhow::Result<()> {
    let t_start = Instant::now();
    let cfg = args.config()?;
    if let Some(dir) = args.out.parent() {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            anyhow::bail!("invalid --out: directory {} does not exist", dir.display());
        }
    }
    let file = SafetensorsFile::open(&args.case)?;
    let case = Case::read(&file)?;
    let input = case.input();
    let t_read = t_start.elapsed().as_secs_f64();
    let mut progress = LogProgress::new();
    let t_init = Instant::now();
    let init;
    let (mut result, device, adapter) = match pick_device(args.q.device)? {
        Picked::Cpu => {
            let b = CpuBackend::new();
            init = t_init.elapsed().as_secs_f64();
            let info = b.info();
            (
                quantize_layer(&b, &cfg, &input, &mut progress)?,
                info.device,
                format!("{} ({} threads)", info.adapter, rayon_threads()),
            )
        }
        Picked::Gpu(choice) => {
            let b = GpuBackend::new(choice)?;
            init = t_init.elapsed().as_secs_f64();
            let info = b.info();
            (
                quantize_layer(&b, &cfg, &input, &mut progress)?,
                info.device,
                info.adapter,
            )
        }
    };
    progress.done();
    result.timings.load += t_read;
    let t_write = Instant::now();
    write_result(args, &cfg, &result)?;
    let write = t_write.elapsed().as_secs_f64();
    let total = t_start.elapsed().as_secs_f64();
    let t = &result.timings;
    let line = json!({
        "method": cfg.method.name(),
        "bits": cfg.bits,
        "group_size": cfg.group_size.as_i64(),
        "sym": cfg.sym,
        "act_order": cfg.act_order,
        "desc_act": cfg.desc_act,
        "static_groups": cfg.static_groups(),
        "clip": cfg.clip.name(),
        "device": device,
        "adapter": adapter,
        "damping": result.damping,
        "damping_retries": result.retries,
        "fallback": result.fallback,
        "m": result.m,
        "d": result.d,
        "ngroups": result.ngroups,
        "seconds": {
            "init": init, "load": t.load, "gram": t.gram, "factor": t.factor, "sweep": t.sweep,
            "readback": t.readback, "write": write,
            "objectives": if cfg.objectives { json!(t.objectives) } else { json!(null) },
            "total": total,
        },
        "objective": {
            "mismatched": result.objective.map(|o| o.mismatched),
            "standard": result.objective.map(|o| o.standard),
        },
        "out": args.out.display().to_string(),
    });
    println!("{line}");
    Ok(())
}

fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    use qronos::model::{perplexity, ModelDir, Tokenizer};
    let t_start = Instant::now();
    let cfg = args.config()?;
    let model = ModelDir::open(&args.model)?;
    let tok = Tokenizer::open(&args.model, &model.config)?;
    let mut text = std::fs::read_to_string(&args.data)
        .with_context(|| format!("reading --data {}", args.data.display()))?;
    if let Some(n) = args.max_chars {
        if let Some((i, _)) = text.char_indices().nth(n) {
            text.truncate(i);
        }
    }
    let t_tok = Instant::now();
    let ids = tok.encode(&text, false)?;
    let tokenize = t_tok.elapsed().as_secs_f64();
    let mut progress = LogProgress::new();
    let t_init = Instant::now();
    let (r, device, adapter, init) = match pick_device(args.device)? {
        Picked::Cpu => {
            let b = CpuBackend::new();
            let init = t_init.elapsed().as_secs_f64();
            let r = perplexity(&b, &model, &ids, tok.bos_token_id, &cfg, &mut progress)?;
            let adapter = format!("{} ({} threads)", b.info().adapter, rayon_threads());
            (r, "cpu".to_string(), adapter, init)
        }
        Picked::Gpu(choice) => {
            let b = GpuBackend::new(choice)?;
            let init = t_init.elapsed().as_secs_f64();
            let r = perplexity(&b, &model, &ids, tok.bos_token_id, &cfg, &mut progress)?;
            (r, "gpu".to_string(), b.info().adapter, init)
        }
    };
    progress.done();
    let processed = (r.windows * r.seqlen) as f64;
    let flop = qronos::model::eval::forward_flops(&model.config, r.windows, r.seqlen);
    let line = json!({
        "ppl": r.ppl,
        "nll": r.nll,
        "tokens": r.tokens,
        "windows": r.windows,
        "seqlen": r.seqlen,
        "protocol": r.protocol.name(),
        "act_bits": cfg.act_bits,
        "kv_bits": cfg.kv_bits,
        "text_tokens": r.text_tokens,
        "device": device,
        "adapter": adapter,
        "model": args.model.display().to_string(),
        "architecture": model.config.arch.hf_name(),
        "weights": model.dtypes(),
        "data": args.data.display().to_string(),
        "seconds": t_start.elapsed().as_secs_f64(),
        "seconds_detail": {"init": init, "tokenize": tokenize, "forward": r.forward_seconds},
        "tokens_per_second": processed / r.forward_seconds,
        "gflop": flop / 1e9,
        "gflop_per_second": flop / 1e9 / r.forward_seconds,
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{line}");
    Ok(())
}

/// Per-linear lines on stderr (one JSON object each), around the pipeline's own progress.
struct LinearLog<'a, S> {
    inner: S,
    quiet: bool,
    progress: &'a std::cell::RefCell<LogProgress>,
}

impl<S: qronos::model::quantize::Sink> qronos::model::quantize::Sink for LinearLog<'_, S> {
    fn linear(&mut self, block: usize, name: &str, r: &LayerResult) -> qronos::Result<()> {
        self.inner.linear(block, name, r)?;
        if !self.quiet {
            self.progress.borrow().println(
                &json!({
                    "linear": name, "m": r.m, "d": r.d,
                    "objective": {
                        "mismatched": r.objective.map(|o| o.mismatched),
                        "standard": r.objective.map(|o| o.standard),
                    },
                    "damping": r.damping, "retries": r.retries, "fallback": r.fallback,
                    "seconds": r.timings.total,
                })
                .to_string(),
            );
        }
        Ok(())
    }
}

struct SharedProgress<'a>(&'a std::cell::RefCell<LogProgress>);
impl Progress for SharedProgress<'_> {
    fn update(&mut self, stage: &str, done: u64, total: u64) -> bool {
        self.0.borrow_mut().update(stage, done, total)
    }
}

/// Perplexity runs after quantizing (`--eval`).
struct EvalJob<'a> {
    ids: &'a [u32],
    bos: Option<u32>,
    cfg: qronos::model::EvalConfig,
}

/// What `qronos quantize` runs on the chosen backend.
struct Quantize<'a> {
    model: &'a qronos::model::ModelDir,
    windows: &'a [Vec<u32>],
    cfg: &'a qronos::model::quantize::PipelineConfig,
    progress: &'a std::cell::RefCell<LogProgress>,
    out: &'a std::path::Path,
    t_start: Instant,
}

struct Quantized {
    report: qronos::model::quantize::PipelineReport,
    /// Wall-clock seconds up to the written weights.
    seconds: f64,
    /// Float and quantized perplexity.
    ppl: Option<(qronos::model::EvalResult, qronos::model::EvalResult)>,
    /// The backend's GEMM rate (GFLOP/s), measured after the run.
    gemm_gflops: f64,
}

impl Quantize<'_> {
    /// The pipeline, the finished weights, then (with `eval`) the float and the quantized
    /// model's perplexity — all on one backend.
    fn on<B: qronos::backend::Forward>(
        &self,
        be: &B,
        mut sink: LinearLog<'_, qronos::model::export::CheckpointWriter<'_>>,
        eval: Option<EvalJob<'_>>,
    ) -> anyhow::Result<Quantized> {
        use qronos::model::{perplexity, ModelDir};
        let mut p = SharedProgress(self.progress);
        let report = qronos::model::quantize::quantize_model(
            be,
            self.model,
            self.windows,
            self.cfg,
            &mut sink,
            &mut p,
        )?;
        self.progress.borrow().done();
        sink.inner.finish()?;
        let seconds = self.t_start.elapsed().as_secs_f64();
        let ppl = match eval {
            None => None,
            Some(job) => {
                let f = perplexity(be, self.model, job.ids, job.bos, &job.cfg, &mut p)?;
                // the quantized model runs with the activation / KV quantization it was
                // calibrated for (a property of the runtime, not of the checkpoint)
                let qcfg = qronos::model::EvalConfig {
                    act_bits: self.cfg.act_bits,
                    kv_bits: self.cfg.kv_bits,
                    ..job.cfg.clone()
                };
                let q = perplexity(
                    be,
                    &ModelDir::open(self.out)?,
                    job.ids,
                    job.bos,
                    &qcfg,
                    &mut p,
                )?;
                self.progress.borrow().done();
                Some((f, q))
            }
        };
        // the yardstick for the stage rates: 2048³ on the CPU, 1024³ on a GPU (lavapipe)
        let n = if be.info().device == "cpu" {
            2048
        } else {
            1024
        };
        let gemm_gflops = qronos::backend::gemm_rate(be, n, n, n)?;
        Ok(Quantized {
            report,
            seconds,
            ppl,
            gemm_gflops,
        })
    }
}

/// Per-stage GFLOP, rate and share of the backend's GEMM rate, and the whole run against the
/// floor (all FLOPs at the GEMM rate).
fn flops_report(
    rep: &qronos::model::quantize::PipelineReport,
    total_seconds: f64,
    gemm: f64,
) -> serde_json::Value {
    let (f, s) = (&rep.flops, &rep.seconds);
    let stage = |flop: f64, secs: f64| {
        let rate = flop / secs.max(1e-9) / 1e9;
        json!({"gflop": flop / 1e9, "gflop_per_second": rate, "of_gemm": rate / gemm})
    };
    let floor = f.total() / 1e9 / gemm;
    json!({
        "gemm_gflop_per_second": gemm,
        "capture": stage(f.capture, s.capture),
        "gram": stage(f.gram, s.gram),
        "quantize": stage(f.quantize, s.quantize),
        "advance": stage(f.advance, s.advance),
        "total": stage(f.total(), total_seconds),
        "floor_seconds": floor,
        "floor_over_total": floor / total_seconds,
    })
}

fn quantize(args: &QuantizeArgs) -> anyhow::Result<()> {
    use qronos::model::export::{
        check_float_input, copy_side_files, CheckpointWriter, OutDir, Output,
    };
    use qronos::model::{calib, ModelDir, Tokenizer};
    let t_start = Instant::now();
    let mut cfg = args.config()?;
    let picked = pick_device(args.q.device)?;
    if let Picked::Gpu(_) = picked {
        cfg.stream_device_bytes = Some(args.gpu_stream_mb << 20);
    }
    let model = ModelDir::open(&args.model)?;
    check_float_input(&model)?;
    let tok = Tokenizer::open(&args.model, &model.config)?;
    let mut ids = Vec::new();
    for f in &args.calib {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading --calib {}", f.display()))?;
        ids.extend(tok.encode(&text, false)?);
    }
    let what = args
        .calib
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    let windows = calib::windows(&ids, args.nsamples, args.seqlen, args.seed, &what)?;
    let eval_text = match &args.eval {
        Some(p) => {
            let mut t = std::fs::read_to_string(p)
                .with_context(|| format!("reading --eval {}", p.display()))?;
            if let Some(n) = args.eval_max_chars {
                if let Some((i, _)) = t.char_indices().nth(n) {
                    t.truncate(i);
                }
            }
            Some(t)
        }
        None => None,
    };
    let format = args.format.format();
    if format != qronos::format::Format::Fake {
        // the format's scale dtype, which may be the model's
        let w = "model.layers.0.self_attn.q_proj.weight";
        cfg.layer.scale_dtype = format.scale_dtype(match model.raw(w).map(|t| t.0) {
            Some(safetensors::Dtype::F32) => qronos::grid::ScaleDtype::F32,
            Some(safetensors::Dtype::F16) => qronos::grid::ScaleDtype::F16,
            _ => qronos::grid::ScaleDtype::Bf16,
        });
    }
    let (output, dtype_name, quant_json) = if format == qronos::format::Format::Fake {
        let (dtype, name) = match args.dtype.unwrap_or(cli::DtypeArg::F32) {
            cli::DtypeArg::F32 => (safetensors::Dtype::F32, "float32"),
            cli::DtypeArg::F16 => (safetensors::Dtype::F16, "float16"),
            cli::DtypeArg::Bf16 => (safetensors::Dtype::BF16, "bfloat16"),
        };
        (Output::Fake(dtype), Some(name), Vec::new())
    } else {
        let stored = qronos::format::Stored::new(format, &cfg.layer);
        for (name, shape) in qronos::model::llama::expected_tensors(&model.config) {
            if let Some(p) = name
                .strip_suffix(".weight")
                .filter(|p| p.ends_with("_proj"))
            {
                stored.check_linear(p, shape[0], shape[1])?;
            }
        }
        (
            Output::Packed(stored),
            None,
            stored.config_entries(&cfg.layer),
        )
    };
    let out = OutDir::create(&args.model, &args.out)?;
    copy_side_files(&model, out.path(), dtype_name, &quant_json)?;
    let progress = std::cell::RefCell::new(LogProgress::new());
    let writer = CheckpointWriter::create(&model, out.path(), output, args.max_shard_size)?;
    let sink = LinearLog {
        inner: writer,
        quiet: args.quiet,
        progress: &progress,
    };
    let eval_ids = match &eval_text {
        Some(text) => Some(tok.encode(text, false)?),
        None => None,
    };
    let eval = eval_ids.as_deref().map(|ids| EvalJob {
        ids,
        bos: tok.bos_token_id,
        cfg: qronos::model::EvalConfig {
            seqlen: args.eval_seqlen,
            ..Default::default()
        },
    });
    let run = Quantize {
        model: &model,
        windows: &windows,
        cfg: &cfg,
        progress: &progress,
        out: out.path(),
        t_start,
    };
    let (done, device, adapter) = match picked {
        Picked::Cpu => {
            let b = CpuBackend::new();
            let adapter = format!("faer ({} threads)", rayon_threads());
            (run.on(&b, sink, eval)?, "cpu".to_string(), adapter)
        }
        Picked::Gpu(choice) => {
            let b = GpuBackend::new(choice)?;
            (run.on(&b, sink, eval)?, "gpu".to_string(), b.info().adapter)
        }
    };
    let (rep, quant_seconds) = (done.report, done.seconds);
    let mut ppl = serde_json::Value::Null;
    if let Some((f, q)) = &done.ppl {
        ppl = json!({
            "data": args.eval.as_ref().map(|p| p.display().to_string()),
            "seqlen": f.seqlen, "windows": f.windows, "tokens": f.tokens, "protocol": f.protocol.name(),
            "float": f.ppl, "quantized": q.ppl,
        });
    }
    let lc = &cfg.layer;
    let linears: Vec<serde_json::Value> = rep
        .linears
        .iter()
        .map(|l| {
            json!({
                "block": l.block, "module": l.module, "m": l.m, "d": l.d,
                "objective": {
                    "mismatched": l.objective.map(|o| o.mismatched),
                    "standard": l.objective.map(|o| o.standard),
                },
                "damping": l.damping, "retries": l.retries, "fallback": l.fallback,
                "seconds": l.seconds,
            })
        })
        .collect();
    let s = &rep.seconds;
    let report = json!({
        "qronos": env!("CARGO_PKG_VERSION"),
        "model": args.model.display().to_string(),
        "architecture": model.config.arch.hf_name(),
        "format": format.name(),
        "dtype": dtype_name,
        "config": {
            "method": lc.method.name(), "bits": lc.bits, "group_size": lc.group_size.as_i64(),
            "sym": lc.sym, "act_order": lc.act_order, "desc_act": lc.desc_act,
            "static_groups": lc.static_groups(), "clip": lc.clip.name(),
            "scale_dtype": lc.scale_dtype.name(),
            "damp_percent": lc.damp_percent,
            "qronos_alpha": lc.qronos_alpha, "block_size": lc.block_size,
            "objectives": lc.objectives, "float_stream": cfg.float_stream.name(),
            "act_bits": cfg.act_bits, "kv_bits": cfg.kv_bits,
            "stream_device_bytes": cfg.stream_device_bytes,
        },
        "calibration": {
            "files": args.calib.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "tokens_in_text": ids.len(), "nsamples": args.nsamples, "seqlen": args.seqlen,
            "seed": args.seed,
            "rule": "files tokenized whole without special tokens and concatenated; \
                     random.seed(seed); start = random.randint(0, n - seqlen - 1) per window \
                     (CPython's Mersenne Twister)",
        },
        "device": device, "adapter": adapter, "streams_on_host": rep.streams_on_host,
        "seconds": {
            "embed": s.embed, "load": s.load, "capture": s.capture, "gram": s.gram,
            "quantize": s.quantize, "write": s.sink, "advance": s.advance,
            "total": quant_seconds,
        },
        "flops": flops_report(&rep, quant_seconds, done.gemm_gflops),
        "peak_rss_mb": peak_rss_mb(),
        "perplexity": ppl,
        "linears": linears,
    });
    let rpath = out.path().join("report.json");
    std::fs::write(&rpath, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", rpath.display()))?;
    let target = out.commit()?;
    let mis: Vec<f64> = rep
        .linears
        .iter()
        .filter_map(|l| l.objective.map(|o| o.mismatched))
        .collect();
    let line = json!({
        "out": target.display().to_string(),
        "method": lc.method.name(), "bits": lc.bits, "group_size": lc.group_size.as_i64(),
        "float_stream": cfg.float_stream.name(),
        "act_bits": cfg.act_bits, "kv_bits": cfg.kv_bits,
        "linears": rep.linears.len(),
        "fallbacks": rep.linears.iter().filter(|l| l.fallback.is_some()).count(),
        "mean_objective": if mis.is_empty() { serde_json::Value::Null } else { json!(mis.iter().sum::<f64>() / mis.len() as f64) },
        "device": report["device"], "seconds": quant_seconds,
        "peak_rss_mb": report["peak_rss_mb"],
        "perplexity": report["perplexity"],
    });
    println!("{line}");
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

enum Picked {
    Cpu,
    Gpu(AdapterChoice),
}

/// `auto`: a hardware GPU if there is one, else the CPU (a software adapter such as lavapipe
/// is ~100× slower than faer).
fn pick_device(arg: DeviceArg) -> anyhow::Result<Picked> {
    Ok(match arg {
        DeviceArg::Cpu => Picked::Cpu,
        DeviceArg::Gpu => Picked::Gpu(AdapterChoice::Any),
        DeviceArg::Auto => {
            if gpu::list_adapters()
                .iter()
                .any(|a| gpu::is_hardware(&a.device_type))
            {
                Picked::Gpu(AdapterChoice::HardwareOnly)
            } else {
                Picked::Cpu
            }
        }
    })
}

fn write_result(args: &LayerArgs, cfg: &QuantConfig, r: &LayerResult) -> anyhow::Result<()> {
    let (m, d, k) = (r.m, r.d, r.ngroups);
    let tensors = vec![
        OutTensor::f32("Q", vec![m, d], &r.q),
        OutTensor::i32("codes", vec![m, d], &r.codes),
        OutTensor::f32("scales", vec![m, k], &r.scales),
        OutTensor::f32("zeros", vec![m, k], &r.zeros),
        OutTensor::i32("g_idx", vec![d], &r.g_idx),
    ];
    let meta = [
        ("format", "pt".to_string()),
        ("quantizer", format!("qronos {}", env!("CARGO_PKG_VERSION"))),
        ("method", cfg.method.name().to_string()),
        ("bits", cfg.bits.to_string()),
        ("group_size", cfg.group_size.as_i64().to_string()),
        ("sym", cfg.sym.to_string()),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b))
    .collect();
    write_atomic(&args.out, tensors, Some(meta))
        .with_context(|| format!("writing {}", args.out.display()))
}

fn devices() -> anyhow::Result<()> {
    let adapters = gpu::list_adapters();
    if adapters.is_empty() {
        println!("no GPU adapters found");
    }
    for a in &adapters {
        println!(
            "{} | backend {} | type {} | max_storage_buffer_binding_size {} MiB | max_buffer_size {} MiB | workgroup storage {} KiB | invocations/workgroup {}",
            a.name,
            a.backend,
            a.device_type,
            a.max_storage_buffer_binding_size >> 20,
            a.max_buffer_size >> 20,
            a.max_compute_workgroup_storage_size >> 10,
            a.max_compute_invocations_per_workgroup
        );
    }
    match adapters.iter().find(|a| gpu::is_hardware(&a.device_type)) {
        Some(a) => println!("--device auto picks: gpu ({})", a.name),
        None => println!(
            "--device auto picks: cpu (faer, {} threads): no hardware GPU; software adapters are far slower than the CPU path",
            rayon_threads()
        ),
    }
    Ok(())
}

fn synth(a: &SynthArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.m > 0 && a.d > 0 && a.tokens > 0,
        "--m, --d and --tokens must be positive"
    );
    let l = qronos::synth::llm_like(a.m, a.d, a.tokens, a.seed);
    let mut t = vec![
        OutTensor::f32("W", vec![l.m, l.d], &l.w),
        OutTensor::f32("X", vec![l.n, l.d], &l.x),
    ];
    if !a.no_xq {
        t.push(OutTensor::f32("Xq", vec![l.n, l.d], &l.xq));
    }
    write_atomic(&a.out, t, None)?;
    println!(
        "{}",
        json!({"out": a.out.display().to_string(), "m": l.m, "d": l.d, "tokens": l.n, "xq": !a.no_xq})
    );
    Ok(())
}
