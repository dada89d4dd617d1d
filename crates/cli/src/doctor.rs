//! `espresso doctor`: what this machine offers for running models — OS, CPU, whether the Apple
//! Neural Engine's private framework and its four classes are present, and the start-up probes
//! (compile + eval, I/O binding order, minimum surface size, compile count) — and which backend
//! `--backend auto` would pick and why. Without an ANE the same probes run against the
//! simulator and are labelled as such.

use std::fmt::Write as _;

use ane_macos::{self as hw, probe};
use anyhow::Result;

/// Print the report to stdout.
pub fn run() -> Result<()> {
    print!("{}", report()?);
    Ok(())
}

/// The whole report as text.
pub fn report() -> Result<String> {
    let mut out = String::new();
    writeln!(out, "espresso doctor")?;
    writeln!(out, "os:        {}", os_description())?;
    writeln!(out, "cpu:       {}", cpu_description())?;
    let availability = hw::availability();
    match &availability {
        Ok(()) => {
            writeln!(out, "ane:       AppleNeuralEngine.framework loaded")?;
            writeln!(
                out,
                "classes:   {} (all present)",
                hw::REQUIRED_CLASSES.join(", ")
            )?;
        }
        Err(why) => {
            writeln!(out, "ane:       unavailable: {why}")?;
            writeln!(out, "ane-sim:   available (CPU simulator of the ANE: fp16 numerics, alphabetical I/O binding)")?;
        }
    }
    // The one `auto` rule: the same probes and decision `--backend auto` uses.
    let decision = hw::decide_auto();
    match &decision.report {
        Some(report) => {
            writeln!(out, "\nprobes on the Apple Neural Engine:")?;
            writeln!(out, "{}", indent(&report.to_string()))?;
            reload_probe(&mut out)?;
        }
        None => {
            writeln!(
                out,
                "\nprobes on the SIMULATOR (ane-sim; no ANE here, so these are not hardware results):"
            )?;
            let mut sim = ane_sim::SimDevice::default();
            let report = probe::run_all(&mut sim);
            writeln!(out, "{}", indent(&report.to_string()))?;
        }
    }
    writeln!(
        out,
        "auto:      --backend auto would pick `{}`: {}",
        decision.choice.backend, decision.choice.reason
    )?;
    Ok(out)
}

/// The weight-reload probe (not part of the `auto` rule) and the budget, on the hardware.
#[cfg(target_vendor = "apple")]
fn reload_probe(out: &mut String) -> Result<()> {
    let mut dev = match hw::AneDevice::open() {
        Ok(d) => d,
        Err(e) => {
            writeln!(out, "  cannot open the device for the reload probe: {e}")?;
            return Ok(());
        }
    };
    let reload = probe::weight_reload(&mut dev);
    writeln!(
        out,
        "  weight reload without compiling (donor net.plist): {reload:?}"
    )?;
    let budget = ane::BudgetedDevice::compile_budget(&dev);
    writeln!(
        out,
        "  process compile budget: {} of {} used (the ANE stack fails after ~119)",
        budget.used(),
        budget.limit()
    )?;
    Ok(())
}

#[cfg(not(target_vendor = "apple"))]
fn reload_probe(_out: &mut String) -> Result<()> {
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Output of a command, trimmed, if it ran and succeeded.
fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn os_description() -> String {
    let os = std::env::consts::OS;
    let version = match os {
        "macos" => command_output("sw_vers", &["-productVersion"]).map(|v| format!("macOS {v}")),
        "linux" => std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| os_release_name(&t)),
        _ => None,
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|k| format!(", kernel {}", k.trim()))
        .unwrap_or_default();
    format!(
        "{os} ({}){kernel}",
        version.unwrap_or_else(|| "version unknown".into())
    )
}

/// `PRETTY_NAME` from an os-release file.
fn os_release_name(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
}

fn cpu_description() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = match std::env::consts::OS {
        "macos" => command_output("sysctl", &["-n", "machdep.cpu.brand_string"]),
        _ => std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| cpuinfo_model(&t)),
    };
    format!(
        "{} {}, {cores} cores available",
        std::env::consts::ARCH,
        model.unwrap_or_else(|| "(model unknown)".into())
    )
}

/// The CPU model from `/proc/cpuinfo` (`model name`, or `Model` on some ARM boards).
fn cpuinfo_model(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        matches!(k.trim(), "model name" | "Model").then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_system_files() {
        let osr = "NAME=\"Ubuntu\"\nPRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\nID=ubuntu\n";
        assert_eq!(os_release_name(osr).as_deref(), Some("Ubuntu 24.04.1 LTS"));
        assert_eq!(os_release_name("ID=x\n"), None);
        let cpu = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpuinfo_model(cpu).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpuinfo_model("processor : 0\n"), None);
    }

    #[cfg(not(target_vendor = "apple"))]
    #[test]
    fn report_off_apple_says_ane_unavailable_and_probes_the_simulator() {
        let text = report().unwrap();
        assert!(
            text.contains("the Apple Neural Engine is not available on this system"),
            "{text}"
        );
        assert!(text.contains("ane-sim:   available"), "{text}");
        assert!(text.contains("probes on the SIMULATOR"), "{text}");
        assert!(text.contains("compile + eval probe:   ok"), "{text}");
        assert!(
            text.contains("output binding (equal sizes):     alphabetical"),
            "{text}"
        );
        assert!(text.contains("minimum working surface: 32 bytes"), "{text}");
        assert!(text.contains("--backend auto would pick `cpu`"), "{text}");
    }
}
