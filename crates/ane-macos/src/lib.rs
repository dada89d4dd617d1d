//! The Apple Neural Engine through the private `AppleNeuralEngine.framework` (reference §2, §3):
//! the only crate with Objective-C, IOSurface and FFI code. It owns the bridge (`AneDevice`,
//! macOS only: `dlopen` of the framework, the four private classes, IOSurfaces, compile → load
//! → evaluate → unload at QoS 21), the on-disk model directory and weight dictionary
//! ([`layout`]), compile options and the retry policy ([`options`]), the mapping of bridge
//! failures to `DeviceError`s ([`errors`]) and the start-up probes ([`probe`]) whose report is
//! the one rule `--backend auto` and `espresso doctor` share.
//!
//! Everything except the bridge compiles and is unit-tested on every platform (the probes run
//! against the simulator on Linux). [`availability`] and [`open_device`] exist everywhere;
//! elsewhere than macOS they say plainly that the ANE is not available and what to use instead.

pub mod coreml;
pub mod errors;
pub mod layout;
pub mod options;
pub mod probe;

#[cfg(target_vendor = "apple")]
mod bridge;
#[cfg(target_vendor = "apple")]
mod device;

#[cfg(target_vendor = "apple")]
pub use device::AneDevice;

use ane::budget::CompileBudget;
use ane::device::{Device, DeviceError};
#[cfg(target_vendor = "apple")]
use ane::policy;

/// The four private classes the bridge needs (reference §2.1).
pub const REQUIRED_CLASSES: [&str; 4] = [
    "_ANEInMemoryModelDescriptor",
    "_ANEInMemoryModel",
    "_ANERequest",
    "_ANEIOSurfaceObject",
];

/// Compiles allowed per process on hardware before the policy refuses: the reference's budget
/// of 100 (§2.4), a margin below the observed failure at ~119 (§11.5). Override with
/// `ESPRESSO_ANE_COMPILE_BUDGET`.
pub const HARDWARE_COMPILE_BUDGET: u64 = 100;

/// The process-wide hardware compile budget (limit from `ESPRESSO_ANE_COMPILE_BUDGET` if set).
pub fn hardware_budget() -> Result<CompileBudget, DeviceError> {
    let limit = match std::env::var("ESPRESSO_ANE_COMPILE_BUDGET") {
        Ok(v) => v.trim().parse::<u64>().map_err(|_| {
            DeviceError::InvalidArgument(format!(
                "ESPRESSO_ANE_COMPILE_BUDGET={v:?} is not a whole number"
            ))
        })?,
        Err(_) => HARDWARE_COMPILE_BUDGET,
    };
    Ok(CompileBudget::process_wide(limit))
}

/// `"<os>/<arch>"` of this build, e.g. `"linux/x86_64"`.
pub fn platform() -> String {
    format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// The one-line reason the ANE cannot be used on a non-Apple system.
pub fn unavailable_message(platform: &str) -> String {
    format!(
        "the Apple Neural Engine is not available on this system ({platform}): it needs macOS on \
         Apple silicon; use --backend ane-sim (the simulator) or --backend cpu"
    )
}

/// Whether the hardware device can be used here. On macOS: the private framework loads and the
/// four required classes exist. Elsewhere: one clear line naming the reason and alternatives.
pub fn availability() -> Result<(), String> {
    #[cfg(target_vendor = "apple")]
    {
        bridge::framework().map(|_| ()).map_err(|e| match e {
            DeviceError::Unavailable(why) => why,
            other => other.to_string(),
        })
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        Err(unavailable_message(&platform()))
    }
}

/// The hardware device wrapped in the compile-budget policy, ready for a backend. Fails with
/// [`DeviceError::Unavailable`] (the [`availability`] message) where there is no ANE.
pub fn open_device() -> Result<Box<dyn Device>, DeviceError> {
    #[cfg(target_vendor = "apple")]
    {
        let dev = AneDevice::open()?;
        Ok(Box::new(policy::CompilePolicy::new(
            dev,
            policy::WeightReload::Off,
        )))
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        Err(DeviceError::Unavailable(unavailable_message(&platform())))
    }
}

/// What `--backend auto` decided, with the evidence: the one rule both `--backend auto` and
/// `espresso doctor` use.
pub struct AutoDecision {
    /// The pick and its reason ([`probe::auto_backend`] over the probe report).
    pub choice: probe::AutoChoice,
    /// The probes run on the hardware device (`None` where there is no ANE to probe).
    pub report: Option<probe::ProbeReport>,
    /// The probed hardware device, ready for a backend, when the choice is the ANE.
    pub device: Option<Box<dyn Device>>,
}

/// Decide `auto`: where the ANE is available, open it, run every probe on it
/// ([`probe::run_all`]: compile + eval, binding order, surface sizes) and apply
/// [`probe::auto_backend`]; elsewhere apply the same rule to the unavailability.
pub fn decide_auto() -> AutoDecision {
    let availability = availability();
    if availability.is_ok() {
        match open_device() {
            Ok(mut dev) => {
                let report = probe::run_all(dev.as_mut());
                let choice = probe::auto_backend(&availability, Some(&report));
                let device = (choice.backend == "ane").then_some(dev);
                return AutoDecision {
                    choice,
                    report: Some(report),
                    device,
                };
            }
            Err(e) => {
                let why = Err(format!("the ANE device did not open: {e}"));
                return AutoDecision {
                    choice: probe::auto_backend(&why, None),
                    report: None,
                    device: None,
                };
            }
        }
    }
    AutoDecision {
        choice: probe::auto_backend(&availability, None),
        report: None,
        device: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_message_names_reason_and_alternatives() {
        let m = unavailable_message("linux/x86_64");
        assert_eq!(
            m,
            "the Apple Neural Engine is not available on this system (linux/x86_64): it needs \
             macOS on Apple silicon; use --backend ane-sim (the simulator) or --backend cpu"
        );
        assert!(!m.contains('\n'));
    }

    #[cfg(not(target_vendor = "apple"))]
    #[test]
    fn off_apple_auto_picks_the_cpu_for_the_unavailability_reason() {
        let d = decide_auto();
        assert_eq!(d.choice.backend, "cpu");
        assert!(d.choice.reason.contains(&platform()), "{}", d.choice.reason);
        assert!(d.report.is_none() && d.device.is_none());
    }

    #[cfg(not(target_vendor = "apple"))]
    #[test]
    fn off_apple_the_device_is_unavailable_with_the_same_line() {
        let err = availability().unwrap_err();
        assert!(err.contains(&platform()), "{err}");
        match open_device() {
            Err(DeviceError::Unavailable(m)) => assert_eq!(m, err),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("hardware device opened off Apple"),
        }
    }
}
