//! Developer tasks, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//! Each task is a sequence of ordinary commands, printed before it runs.

mod layers;

use std::process::Command;

use anyhow::{Context, bail};

const HELP: &str = "\
cargo xtask <task>

Tasks:
  ci      layers, format check, clippy with warnings denied, the whole test suite
  layers  no import circle between a crate's modules; the server depends on core and service only
  bench   the criterion benchmarks (verify, event ingest, event queries); figures go to BENCHMARKS.md
  load    verify over HTTP under wrk (scripts/load-verify.sh)
  dist    a release build of the keyward binary, with its path and size
";

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program).args(args).status().with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the workspace root")?;
    std::env::set_current_dir(root)?;
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "ci" => {
            layers::check(root)?;
            run("cargo", &["fmt", "--all", "--check"])?;
            run("cargo", &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"])?;
            run("cargo", &["test", "--workspace", "--locked"])
        }
        "bench" => {
            run("cargo", &["bench", "-p", "keyward-service"])?;
            run("cargo", &["bench", "-p", "keyward-store"])
        }
        "layers" => layers::check(root),
        "load" => run("bash", &["scripts/load-verify.sh"]),
        "dist" => {
            run("cargo", &["build", "--release", "-p", "keyward"])?;
            let bin = root.join("target/release/keyward");
            let size = std::fs::metadata(&bin)?.len();
            println!("{} ({:.1} MiB)", bin.display(), size as f64 / 1_048_576.0);
            Ok(())
        }
        "" | "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => bail!("unknown task {other:?}\n\n{HELP}"),
    }
}
