//! End-to-end tests of `espresso train` on a tiny from-scratch model with the real model's
//! tokenizer: resume is bit-identical, Ctrl-C saves a checkpoint, bad input is one `error:` line
//! with nothing written, a non-finite loss stops at the right step, and the output GGUF runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn espresso(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_espresso"))
        .args(args)
        .output()
        .expect("run espresso")
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "espresso failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_fails_with(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.contains("error:"), "no error line: {stderr}");
    assert!(
        stderr.contains(needle),
        "stderr should mention {needle:?}: {stderr}"
    );
}

fn real_model() -> String {
    model::cache::default_model_path()
        .unwrap_or_else(|e| panic!("{e}"))
        .display()
        .to_string()
}

/// A scratch directory with a shape file and a few KB of text.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("shape.json"),
            r#"{"dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 64, "context_length": 64}"#,
        )
        .expect("shape");
        let text: String = (0..200)
            .map(|i| format!("Line {i}: the quality of mercy is not strained; it droppeth as the gentle rain. "))
            .collect();
        std::fs::write(dir.path().join("data.txt"), text).expect("data");
        Self { dir }
    }
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    /// The common flags of a run, plus `extra`.
    fn train(&self, steps: u64, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--config",
            &self.p("shape.json"),
            "--tokenizer",
            &real_model(),
            "--data",
            &self.p("data.txt"),
            "--seq-len",
            "16",
            "--batch",
            "2",
            "--grad-accum",
            "2",
            "--lr",
            "3e-3",
            "--schedule",
            "constant",
            "--warmup",
            "2",
            "--clip",
            "1.0",
            "--weight-decay",
            "0.1",
            "--shuffle",
            "random",
            "--seed",
            "5",
            "--val-split",
            "0.1",
            "--eval-every",
            "2",
            "--eval-windows",
            "3",
            "--threads",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push("--steps".into());
        v.push(steps.to_string());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }
}

fn run(args: &[String]) -> Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    espresso(&a)
}

/// The log without the measured (timing) field.
fn log_lines(path: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("log")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("log line is JSON");
            let obj = v.as_object_mut().expect("object");
            for k in ["step", "loss", "lr", "grad_norm", "tokens_per_s"] {
                assert!(obj.contains_key(k), "log line lacks {k}: {l}");
            }
            obj.remove("tokens_per_s");
            v
        })
        .collect()
}

/// `--steps 3` then `--resume` to 6 against one run of 6, with a constant schedule after the
/// warmup: a cosine schedule is defined by `--steps`, so "3, then 6" is a different run by design
/// there (the Ctrl-C test resumes a cosine run).
#[test]
fn resume_continues_bit_identically() {
    let s = Setup::new();
    // Same file name (it becomes general.name), different directories.
    std::fs::create_dir_all(s.p("a")).unwrap();
    std::fs::create_dir_all(s.p("b")).unwrap();
    assert_ok(&run(&s.train(
        6,
        &[
            "--checkpoint",
            &s.p("ck_a"),
            "--log",
            &s.p("a.jsonl"),
            "--out",
            &s.p("a/m.gguf"),
        ],
    )));
    // 3 steps, then resume to 6 (the interrupted run's log is continued).
    let b = [
        "--checkpoint",
        &s.p("ck_b"),
        "--log",
        &s.p("b.jsonl"),
        "--out",
        &s.p("b/m.gguf"),
    ];
    assert_ok(&run(&s.train(3, &b)));
    let mut resumed = b.to_vec();
    let ck_b = s.p("ck_b");
    resumed.extend(["--resume", ck_b.as_str()]);
    assert_ok(&run(&s.train(6, &resumed)));
    let (la, lb) = (log_lines(&s.p("a.jsonl")), log_lines(&s.p("b.jsonl")));
    assert_eq!(la.len(), 6);
    assert_eq!(la, lb, "log lines differ between one run and 3 + resume");
    assert!(
        la.iter().filter(|v| v.get("val_loss").is_some()).count() == 3,
        "val_loss at steps 2, 4, 6: {la:?}"
    );
    let (a, b) = (
        std::fs::read(s.p("a/m.gguf")).unwrap(),
        std::fs::read(s.p("b/m.gguf")).unwrap(),
    );
    assert!(a == b, "weights differ between one run and 3 + resume");
    let ck = |d: &str| std::fs::read(Path::new(&s.p(d)).join("checkpoint.bin")).unwrap();
    assert!(ck("ck_a") == ck("ck_b"), "final checkpoints differ");
    // The loss fell and the model runs.
    let first = la[0]["loss"].as_f64().unwrap();
    let last = la[5]["loss"].as_f64().unwrap();
    assert!(last < first, "loss did not fall: {first} → {last}");
    let out = espresso(&[
        "generate",
        "-m",
        &s.p("a/m.gguf"),
        "--max-tokens",
        "4",
        "the quality",
    ]);
    assert_ok(&out);
}

#[test]
fn resume_refuses_other_settings_and_shapes() {
    let s = Setup::new();
    assert_ok(&run(
        &s.train(2, &["--checkpoint", &s.p("ck"), "--out", &s.p("o.gguf")])
    ));
    let ck = s.p("ck");
    let mut other_batch = s.train(4, &["--resume", &ck, "--out", &s.p("x.gguf")]);
    let i = other_batch.iter().position(|a| a == "--batch").unwrap();
    other_batch[i + 1] = "3".into();
    assert_fails_with(&run(&other_batch), "--batch");
    std::fs::write(
        s.p("shape.json"),
        r#"{"dim": 64, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 64, "context_length": 64}"#,
    )
    .unwrap();
    assert_fails_with(
        &run(&s.train(4, &["--resume", &ck, "--out", &s.p("x.gguf")])),
        "dim",
    );
    assert!(!Path::new(&s.p("x.gguf")).exists());
    // A damaged checkpoint is named as such.
    let f = Path::new(&ck).join("checkpoint.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(
        s.p("shape.json"),
        r#"{"dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 64, "context_length": 64}"#,
    )
    .unwrap();
    assert_fails_with(
        &run(&s.train(4, &["--resume", &ck, "--out", &s.p("x.gguf")])),
        "truncated",
    );
}

#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes() {
    let s = Setup::new();
    let mut args = s.train(
        100_000,
        &[
            "--checkpoint",
            &s.p("ck"),
            "--log",
            &s.p("log.jsonl"),
            "--out",
            &s.p("o.gguf"),
        ],
    );
    let i = args.iter().position(|x| x == "--schedule").unwrap();
    args[i + 1] = "cosine".into();
    let child = Command::new(env!("CARGO_BIN_EXE_espresso"))
        .args(&args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    while std::fs::read_to_string(s.p("log.jsonl")).map_or(0, |l| l.lines().count()) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().expect("wait");
    assert_fails_with(&out, "interrupted after step");
    assert!(
        !Path::new(&s.p("o.gguf")).exists(),
        "--out written by an interrupted run"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let step: u64 = stderr
        .split("interrupted after step ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no step in {stderr}"));
    assert!(step >= 2);
    let ck = s.p("ck");
    let more = (step + 1).to_string();
    let mut resume = s.train(
        step + 1,
        &[
            "--resume",
            &ck,
            "--log",
            &s.p("log.jsonl"),
            "--out",
            &s.p("o.gguf"),
        ],
    );
    let i = resume.iter().position(|a| a == "--steps").unwrap();
    resume[i + 1] = more;
    let i = resume.iter().position(|a| a == "--schedule").unwrap();
    resume[i + 1] = "cosine".into();
    assert_ok(&run(&resume));
    let lines = log_lines(&s.p("log.jsonl"));
    let steps: Vec<u64> = lines.iter().map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(
        steps,
        (1..=step + 1).collect::<Vec<_>>(),
        "log continues without gaps or repeats"
    );
}

#[test]
fn bad_input_is_one_error_line_and_writes_nothing() {
    let s = Setup::new();
    let out = s.p("never.gguf");
    let with = |flag: &str, value: &str| {
        let mut a = s.train(2, &["--out", &out]);
        match a.iter().position(|x| x == flag) {
            Some(i) => a[i + 1] = value.to_string(),
            None => a.extend([flag.to_string(), value.to_string()]),
        }
        a
    };
    assert_fails_with(&run(&with("--lr", "0")), "--lr");
    assert_fails_with(&run(&with("--lr", "-1")), "--lr");
    assert_fails_with(&run(&with("--seq-len", "65")), "context length");
    assert_fails_with(&run(&with("--data", &s.p("missing.txt"))), "missing.txt");
    std::fs::write(s.p("d.csv"), "a,b").unwrap();
    assert_fails_with(&run(&with("--data", &s.p("d.csv"))), ".csv");
    std::fs::write(s.p("empty.txt"), "").unwrap();
    assert_fails_with(&run(&with("--data", &s.p("empty.txt"))), "empty.txt");
    std::fs::write(s.p("short.txt"), "too short").unwrap();
    assert_fails_with(&run(&with("--data", &s.p("short.txt"))), "tokens");
    std::fs::write(s.p("bad.jsonl"), "{\"text\": \"ok\"}\n{not json\n").unwrap();
    assert_fails_with(&run(&with("--data", &s.p("bad.jsonl"))), "line 2");
    std::fs::write(s.p("shape2.json"), r#"{"dim": 30, "n_layers": 1, "n_heads": 4, "n_kv_heads": 1, "ffn_dim": 8, "context_length": 8}"#).unwrap();
    assert_fails_with(
        &run(&with("--config", &s.p("shape2.json"))),
        "multiple of n_heads",
    );
    assert_fails_with(&run(&with("--optimizer", "lion")), "lion");
    assert_fails_with(&run(&with("--eval-windows", "0")), "--eval-windows");
    assert!(
        !Path::new(&out).exists(),
        "an output was written by a failed run"
    );
}

#[test]
fn non_finite_loss_stops_at_its_step_and_keeps_the_last_checkpoint() {
    let s = Setup::new();
    let mut a = s.train(
        5,
        &[
            "--optimizer",
            "sgd",
            "--save-every",
            "1",
            "--checkpoint",
            &s.p("ck"),
            "--out",
            &s.p("o.gguf"),
        ],
    );
    let i = a.iter().position(|x| x == "--lr").unwrap();
    a[i + 1] = "1e30".into();
    let i = a.iter().position(|x| x == "--clip").unwrap();
    a[i + 1] = "0".into();
    let out = run(&a);
    assert_fails_with(&out, "at step 2");
    assert!(!Path::new(&s.p("o.gguf")).exists());
    // The checkpoint of step 1 is intact and resumable settings-wise.
    let ck = engine::train::checkpoint::load(Path::new(&s.p("ck"))).expect("last good checkpoint");
    assert_eq!(ck.step, 1);
}

#[test]
fn fine_tunes_the_real_model_and_writes_a_runnable_q8_0() {
    let s = Setup::new();
    let out = s.p("ft.gguf");
    let o = espresso(&[
        "train",
        "-m",
        &real_model(),
        "--data",
        &s.p("data.txt"),
        "--seq-len",
        "16",
        "--batch",
        "1",
        "--steps",
        "2",
        "--lr",
        "1e-4",
        "--threads",
        "2",
        "--out",
        &out,
        "--out-type",
        "q8_0",
        "--log",
        &s.p("ft.jsonl"),
    ]);
    assert_ok(&o);
    let lines = log_lines(&s.p("ft.jsonl"));
    assert_eq!(lines.len(), 2);
    // A pretrained model already knows English: its first loss is far below log(49152) = 10.8.
    let l0 = lines[0]["loss"].as_f64().unwrap();
    assert!(l0 < 6.0, "fine-tune start loss {l0}");
    let f = model::GgufFile::open(PathBuf::from(&out)).expect("output GGUF");
    assert!(
        f.get("tokenizer.chat_template").is_some(),
        "chat template kept"
    );
    assert_ok(&espresso(&[
        "generate",
        "-m",
        &out,
        "--max-tokens",
        "4",
        "Hello",
    ]));
}

/// `--backend ane-sim --sim-precision f32` runs the transformer blocks as MIL kernels on the
/// simulator: every step's loss (and held-out loss) equals the CPU trainer's within 1e-4
/// relative, and the log's cumulative compile count is the same after step 1 and step 20 (the
/// weights are kernel inputs), while dispatches grow every step. The CPU log has no such keys.
#[test]
fn ane_sim_f32_trains_like_the_cpu_with_a_fixed_compile_count() {
    let s = Setup::new();
    let (cpu_log, ane_log) = (s.p("cpu.jsonl"), s.p("ane.jsonl"));
    assert_ok(&run(
        &s.train(20, &["--log", &cpu_log, "--out", &s.p("cpu.gguf")])
    ));
    let out = run(&s.train(
        20,
        &[
            "--log",
            &ane_log,
            "--out",
            &s.p("ane.gguf"),
            "--backend",
            "ane-sim",
            "--sim-precision",
            "f32",
        ],
    ));
    assert_ok(&out);
    let (cpu, ane) = (log_lines(&cpu_log), log_lines(&ane_log));
    assert_eq!(cpu.len(), 20);
    assert_eq!(ane.len(), 20);
    let mut last_dispatches = 0;
    for (c, a) in cpu.iter().zip(&ane) {
        assert!(c.get("compiles").is_none() && c.get("dispatches").is_none());
        for key in ["loss", "val_loss"] {
            let (Some(x), Some(y)) = (c[key].as_f64(), a[key].as_f64()) else {
                continue;
            };
            let rel = (x - y).abs() / x.abs();
            assert!(rel <= 1e-4, "step {}: {key} cpu {x} ane-sim {y}", c["step"]);
        }
        assert_eq!(a["compiles"].as_u64(), ane[0]["compiles"].as_u64());
        let d = a["dispatches"].as_u64().expect("dispatches");
        assert!(d > last_dispatches, "dispatches grow every step");
        last_dispatches = d;
    }
    assert_eq!(ane[0]["compiles"].as_u64(), Some(4));
    assert_eq!(ane[19]["compiles"].as_u64(), Some(4));
}

/// fp16 on the simulator trains under loss scaling (`auto` = dynamic at 65536, in the log).
/// Started far too high (`dynamic:2^40`), the first steps' gradients overflow fp16: each is
/// logged as skipped (no gradient norm) with the scale halving, until the steps apply and
/// learn; the run warns about the skipped steps. A scale that is not a power of two is refused.
#[test]
fn ane_sim_fp16_scales_the_loss_and_skips_overflowing_steps() {
    let s = Setup::new();
    let (auto_log, high_log) = (s.p("auto.jsonl"), s.p("high.jsonl"));
    let fp16 = ["--backend", "ane-sim", "--sim-precision", "fp16"];
    let auto = run(&s.train(
        2,
        &[&fp16[..], &["--log", &auto_log, "--out", &s.p("a.gguf")]].concat(),
    ));
    assert_ok(&auto);
    for l in log_lines(&auto_log) {
        assert_eq!(l["loss_scale"].as_f64(), Some(65536.0), "{l}");
        assert!(l.get("skipped").is_none(), "{l}");
    }
    let high = run(&s.train(
        30,
        &[
            &fp16[..],
            &[
                "--loss-scale",
                "dynamic:1099511627776",
                "--log",
                &high_log,
                "--out",
                &s.p("h.gguf"),
            ],
        ]
        .concat(),
    ));
    assert_ok(&high);
    let lines = log_lines(&high_log);
    assert_eq!(lines.len(), 30);
    let skipped: Vec<&serde_json::Value> = lines.iter().filter(|l| l["skipped"] == true).collect();
    assert!(
        !skipped.is_empty() && lines[0]["skipped"] == true,
        "2^40 overflows fp16"
    );
    assert!(skipped.len() < 25, "the scale backs off until steps apply");
    for (i, l) in skipped.iter().enumerate() {
        assert!(
            l["grad_norm"].is_null(),
            "no norm for an overflowed step: {l}"
        );
        let want = 2f64.powi(40 - i as i32);
        assert_eq!(
            l["loss_scale"].as_f64(),
            Some(want),
            "halves each time: {l}"
        );
    }
    let applied: Vec<f64> = lines
        .iter()
        .filter(|l| l.get("skipped").is_none())
        .map(|l| l["grad_norm"].as_f64().expect("finite norm"))
        .collect();
    assert!(applied.len() >= 5);
    let stderr = String::from_utf8_lossy(&high.stderr);
    assert!(
        stderr.contains("skipped because their gradients overflowed"),
        "{stderr}"
    );
    let bad = run(&s.train(1, &["--loss-scale", "300", "--out", &s.p("b.gguf")]));
    assert_fails_with(&bad, "power of two");

    // The scale and its good-step count are in the checkpoint: 8 steps + resume to 30 logs
    // exactly what the single run logged (skips and scales included).
    let ck = s.p("ck");
    let resumable = [
        "--loss-scale",
        "dynamic:1099511627776",
        "--checkpoint",
        ck.as_str(),
        "--log",
        &s.p("r.jsonl"),
        "--out",
        &s.p("r.gguf"),
    ];
    assert_ok(&run(&s.train(8, &[&fp16[..], &resumable[..]].concat())));
    let resumed = [&fp16[..], &resumable[..], &["--resume", ck.as_str()]].concat();
    assert_ok(&run(&s.train(30, &resumed)));
    // (Dispatches count per process, so they restart with the resumed process.)
    let no_dispatches = |mut v: Vec<serde_json::Value>| {
        v.iter_mut().for_each(|l| {
            l.as_object_mut().map(|o| o.remove("dispatches"));
        });
        v
    };
    assert_eq!(
        no_dispatches(log_lines(&s.p("r.jsonl"))),
        no_dispatches(lines),
        "8 + resume differs from one run"
    );
    // A checkpoint made with loss scaling is not resumed without it.
    let unscaled = [
        "--loss-scale",
        "off",
        "--resume",
        ck.as_str(),
        "--out",
        &s.p("u.gguf"),
    ];
    assert_fails_with(
        &run(&s.train(31, &[&fp16[..], &unscaled[..]].concat())),
        "--loss-scale",
    );
}

/// The pulled Shakespeare corpus (`espresso pull --data shakespeare`; CI pulls it).
fn shakespeare_play(name: &str) -> String {
    let dir = engine::train::data::resolve("shakespeare").unwrap_or_else(|e| {
        panic!("{e} (this test needs the corpus: espresso pull --data shakespeare)")
    });
    dir.join(name).display().to_string()
}

/// Fine-tuning SmolLM2-135M on Shakespeare with its blocks as fp16 MIL kernels on the
/// simulator (dynamic loss scaling, 4 compiles) lowers the held-out loss as the CPU trainer
/// does: every step's loss and both held-out losses within 2e-2 relative of the CPU's, no
/// step skipped. (One play, 4 steps of 2 × 32 tokens, to stay within CI's time.)
#[test]
fn smollm2_fine_tunes_on_shakespeare_on_ane_sim_like_the_cpu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n).display().to_string();
    let data = shakespeare_play("hamlet_gut.txt");
    let train = |backend: &str| -> (Vec<serde_json::Value>, String) {
        let log = p(&format!("{backend}.jsonl"));
        let out = run(&[
            "train",
            "-m",
            &real_model(),
            "--data",
            &data,
            "--val-split",
            "0.05",
            "--seq-len",
            "32",
            "--batch",
            "2",
            "--steps",
            "4",
            "--lr",
            "1e-4",
            "--eval-every",
            "4",
            "--eval-windows",
            "4",
            "--threads",
            "2",
            "--backend",
            backend,
            "--log",
            &log,
            // Q8_0, not the default F32: 145 MB instead of 538 MB per run on CI's disk.
            "--out",
            &p(&format!("{backend}.gguf")),
            "--out-type",
            "q8_0",
        ]
        .map(String::from));
        assert_ok(&out);
        (
            log_lines(&log),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (cpu, cpu_err) = train("cpu");
    let (ane, ane_err) = train("ane-sim");
    let before = |stderr: &str| -> f64 {
        let line = stderr
            .lines()
            .find_map(|l| l.strip_prefix("held-out loss before training: "))
            .unwrap_or_else(|| panic!("no initial held-out loss in {stderr}"));
        line.trim().parse().expect("a number")
    };
    let (cpu0, ane0) = (before(&cpu_err), before(&ane_err));
    let (cpu4, ane4) = (
        cpu[3]["val_loss"].as_f64().expect("val at step 4"),
        ane[3]["val_loss"].as_f64().expect("val at step 4"),
    );
    eprintln!("held-out loss: cpu {cpu0:.4} → {cpu4:.4}, ane-sim fp16 {ane0:.4} → {ane4:.4}");
    assert!(cpu4 < cpu0 - 0.05 && ane4 < ane0 - 0.05, "both learn");
    for (x, y) in [(cpu0, ane0), (cpu4, ane4)] {
        assert!((x - y).abs() <= 2e-2 * x, "held-out cpu {x} ane-sim {y}");
    }
    for (c, a) in cpu.iter().zip(&ane) {
        let (x, y) = (c["loss"].as_f64().unwrap(), a["loss"].as_f64().unwrap());
        assert!(
            (x - y).abs() <= 2e-2 * x,
            "step {}: cpu {x} ane-sim {y}",
            c["step"]
        );
        assert!(a.get("skipped").is_none(), "{a}");
        assert_eq!(a["compiles"].as_u64(), Some(4));
    }
}

/// `bench-train` times both backends in alternating rounds and prints the cost model's
/// prediction of the same step, labelled as one: dispatches 4 per layer per sequence, measured
/// on the simulator and predicted alike; compiles unchanged by the measured steps.
#[test]
fn bench_train_measures_both_backends_and_labels_the_prediction() {
    let s = Setup::new();
    let shape = s.p("shape.json");
    let model = real_model();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "bench-train",
            "--config",
            &shape,
            "--tokenizer",
            &model,
            "--seq-len",
            "16",
            "--batch",
            "2",
            "--steps",
            "2",
            "--rounds",
            "2",
            "--threads",
            "2",
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|e| e.to_string()));
        v
    };
    let out = run(&args(&["--json"]));
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert!(results[0]["backend"].as_str().unwrap().starts_with("cpu"));
    assert!(results[1]["backend"].as_str().unwrap().contains("ane-sim"));
    for r in results {
        assert_eq!(r["steps"].as_u64(), Some(4), "2 steps × 2 rounds: {r}");
        assert!(r["ms_per_step"].as_f64().unwrap() > 0.0);
        assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    let (cpu, ane) = (&results[0], &results[1]);
    assert!(cpu["dispatches_per_step"].is_null());
    // 4 kernels × 2 layers × 2 sequences.
    assert_eq!(ane["dispatches_per_step"].as_f64(), Some(16.0));
    assert_eq!(ane["compiles_after_setup"].as_u64(), Some(4));
    assert_eq!(ane["compiles_at_end"].as_u64(), Some(4));
    let pred = &v["prediction"];
    assert!(pred["what"].as_str().unwrap().contains("not a measurement"));
    assert_eq!(pred["dispatches_per_step"].as_u64(), Some(16));
    assert!(pred["ane_ms_per_step"].as_f64().unwrap() > 0.0);
    assert_eq!(pred["chip"].as_str(), Some("M4"));

    let text = run(&args(&["--predict-only", "--chip", "M1"]));
    assert_ok(&text);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("prediction on M1") && stdout.contains("not a measurement"));
    assert!(
        !stdout.contains("| backend |"),
        "--predict-only times nothing: {stdout}"
    );

    assert_fails_with(&run(&args(&["--chip", "Z9"])), "unknown chip");
    assert_fails_with(&run(&args(&["--grad-accum", "0"])), "at least 1");
}
