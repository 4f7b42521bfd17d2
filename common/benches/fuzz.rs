//! The long fuzz run: every target of `tests/fuzzing` for many inputs.
//!
//! ```text
//! cargo bench -p common --bench fuzz -- --inputs 1000000
//! ```
//!
//! Options: `--inputs N` per target (default 1,000,000), `--seed S`,
//! `--target NAME` (repeatable; default all), `--time-limit SECS` per target,
//! `--list`. Prints a table (target, inputs, seconds, inputs/s, crashes, ...),
//! the crashing inputs in hex, and writes `data/bench/fuzz.json`; each
//! crashing input is also saved under `data/bench/fuzz-crashes/`. Exits 1 if
//! anything crashed.

#[path = "../tests/fuzzing/mod.rs"]
mod fuzzing;
mod support;

use std::time::{Duration, Instant};

use fuzzing::{targets, Report, Settings, Target};

#[global_allocator]
static ALLOC: fuzzing::CountingAlloc = fuzzing::CountingAlloc;

struct Args {
    inputs: u64,
    seed: u64,
    targets: Vec<String>,
    time_limit: Option<Duration>,
    list: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        inputs: 1_000_000,
        seed: 0x4845_524D_4553,
        targets: Vec::new(),
        time_limit: None,
        list: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--inputs" => {
                args.inputs = value("--inputs")?
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("--inputs: {e}"))?
            }
            "--seed" => {
                args.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--target" => args.targets.push(value("--target")?),
            "--time-limit" => {
                let secs: f64 = value("--time-limit")?
                    .parse()
                    .map_err(|e| format!("--time-limit: {e}"))?;
                args.time_limit = Some(Duration::from_secs_f64(secs));
            }
            "--list" => args.list = true,
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn report_json(r: &Report, about: &str) -> serde_json::Value {
    serde_json::json!({
        "target": r.name,
        "about": about,
        "inputs": r.inputs,
        "seconds": r.secs,
        "inputs_per_sec": r.rate(),
        "crashes": r.crash_count,
        "seeds": r.seeds,
        "corpus_at_end": r.corpus,
        "peak_alloc_bytes": r.peak_alloc,
        "outcomes": r.outcomes,
        "crash_details": r.crashes.iter().map(|c| serde_json::json!({
            "kind": format!("{:?}", c.kind),
            "index": c.index,
            "message": c.message,
            "location": c.location,
            "input_len": c.input.len(),
            "input_hex": hex::encode(&c.input[..c.input.len().min(4096)]),
        })).collect::<Vec<_>>(),
    })
}

fn save_crashes(r: &Report) -> std::io::Result<()> {
    if r.crashes.is_empty() {
        return Ok(());
    }
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/bench/fuzz-crashes");
    std::fs::create_dir_all(&dir)?;
    for c in &r.crashes {
        std::fs::write(dir.join(format!("{}-{}.bin", r.name, c.index)), &c.input)?;
    }
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuzz: {e}");
            std::process::exit(2);
        }
    };
    let all = targets::all();
    if args.list {
        for t in &all {
            println!("{:<22} {}", t.name, t.about);
        }
        return;
    }
    let chosen: Vec<Target> = if args.targets.is_empty() {
        all
    } else {
        let mut chosen = Vec::new();
        for name in &args.targets {
            match targets::by_name(name) {
                Some(t) => chosen.push(t),
                None => {
                    eprintln!("fuzz: no target {name:?} (see --list)");
                    std::process::exit(2);
                }
            }
        }
        chosen
    };
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "fuzz: {} targets, {} inputs each, seed {:#x}, {profile} build",
        chosen.len(),
        args.inputs,
        args.seed
    );
    println!(
        "{:<22} {:>10} {:>9} {:>11} {:>8} {:>6} {:>7} {:>10}",
        "target", "inputs", "seconds", "inputs/s", "crashes", "seeds", "corpus", "peak heap"
    );
    let settings = Settings {
        inputs: args.inputs,
        seed: args.seed,
        time_limit: args.time_limit,
    };
    let start = Instant::now();
    let mut rows = Vec::new();
    let mut total_inputs = 0u64;
    let mut total_crashes = 0u64;
    let mut details = String::new();
    for target in &chosen {
        let r = fuzzing::fuzz(target, &settings);
        println!(
            "{:<22} {:>10} {:>9.1} {:>11.0} {:>8} {:>6} {:>7} {:>10}",
            r.name,
            r.inputs,
            r.secs,
            r.rate(),
            r.crash_count,
            r.seeds,
            r.corpus,
            r.peak_alloc
        );
        total_inputs += r.inputs;
        total_crashes += r.crash_count;
        details.push_str(&r.describe_crashes());
        if let Err(e) = save_crashes(&r) {
            eprintln!("fuzz: cannot save crashing inputs: {e}");
        }
        rows.push(report_json(&r, target.about));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:<22} {:>10} {:>9.1} {:>11.0} {:>8}",
        "total",
        total_inputs,
        secs,
        total_inputs as f64 / secs.max(1e-9),
        total_crashes
    );
    if !details.is_empty() {
        println!("\ncrashes (first of each location):\n{details}");
    }
    let report = serde_json::json!({
        "bench": "fuzz",
        "command": format!(
            "cargo bench -p common --bench fuzz -- {}",
            std::env::args()
                .skip(1)
                .filter(|a| a != "--bench")
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "profile": profile,
        "machine": support::machine(),
        "seed": args.seed,
        "inputs_per_target": args.inputs,
        "time_limit_secs": args.time_limit.map(|d| d.as_secs_f64()),
        "total": {
            "inputs": total_inputs,
            "seconds": secs,
            "inputs_per_sec": total_inputs as f64 / secs.max(1e-9),
            "crashes": total_crashes,
        },
        "targets": rows,
    });
    match support::write_report("fuzz", &report) {
        Ok(path) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("fuzz: cannot write the report: {e}"),
    }
    if total_crashes > 0 {
        std::process::exit(1);
    }
}
