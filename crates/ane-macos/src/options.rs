//! Compile/load options and the retry policy (reference §2.3 steps 7, 11, 12; §2.4; appendix A).
//!
//! Options are empty by default; each documented key can be switched on from the environment
//! with the reference's switch names. A failing compile or load with a non-empty dictionary is
//! retried once with `{}` unless `ANE_STRICT_OPTIONS` is set; compiler failures (error code 4)
//! are retried up to 5 times with a 100 ms → 1 s doubling back-off.

use std::time::Duration;

use ane::device::DeviceError;

/// `QOS_CLASS_DEFAULT`, passed as `unsigned int` to every compile, load, eval and unload.
pub const QOS: u32 = 21;

/// A value of the options dictionary (NSNumber on hardware).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionValue {
    Bool(bool),
    Int(i64),
}

/// Use of compiled programs cached from earlier processes (`ANE_COMPILE_CACHE_POLICY`, §2.8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CachePolicy {
    /// Always compile (the OS keeps its own cache, so repeat compiles are fast).
    #[default]
    Auto,
    /// Load `<cacheRoot>/<hexId>/net.plist` without compiling when it exists.
    PreferCached,
    /// `purgeCompiledModel` first, then compile.
    ForceCold,
}

impl CachePolicy {
    pub fn parse(value: &str) -> Result<Self, DeviceError> {
        match value.trim() {
            "" | "auto" => Ok(Self::Auto),
            "preferCached" => Ok(Self::PreferCached),
            "forceCold" => Ok(Self::ForceCold),
            v => Err(DeviceError::InvalidArgument(format!(
                "ANE_COMPILE_CACHE_POLICY={v:?}: expected auto, preferCached or forceCold"
            ))),
        }
    }
}

/// Options for `compileWithQoS:options:error:` / `loadWithQoS:options:error:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// `kANEFEnablePowerSavingKey = NO` (`ANE_DISABLE_POWER_SAVING`).
    pub disable_power_saving: bool,
    /// `kANEFKeepModelMemoryWiredKey = YES` (`ANE_KEEP_MODEL_WIRED`).
    pub keep_model_wired: bool,
    /// `kANEFEnableLateLatchKey = YES` (`ANE_ENABLE_LATE_LATCH`).
    pub late_latch: bool,
    /// `kANEFSkipPreparePhaseKey = YES` (`ANE_SKIP_PREPARE`).
    pub skip_prepare: bool,
    /// `kANEFEnableFWToFWSignal = YES` (`ANE_ENABLE_FW_TO_FW_SIGNAL`).
    pub fw_to_fw_signal: bool,
    /// `kANEFDisableIOFencesUseSharedEventsKey = YES` (`ANE_DISABLE_IO_FENCES`).
    pub disable_io_fences: bool,
    /// `kANEFMemoryPoolIDKey = n` (`ANE_MEMORY_POOL_ID`).
    pub memory_pool_id: Option<i64>,
    /// No `{}` fallback after a failure with options (`ANE_STRICT_OPTIONS`).
    pub strict: bool,
    /// Keep `<tmp>/<hexId>/` after unload or failure (`ANE_KEEP_TMPDIR`).
    pub keep_tmpdir: bool,
    /// `ANE_COMPILE_CACHE_POLICY`.
    pub cache_policy: CachePolicy,
}

fn parse_flag(name: &str, value: &str) -> Result<bool, DeviceError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(DeviceError::InvalidArgument(format!(
            "{name}={value:?}: expected 1/0, true/false, yes/no or on/off"
        ))),
    }
}

impl CompileOptions {
    /// Read the switches through `get` (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, DeviceError> {
        let flag = |name: &str| match get(name) {
            Some(v) => parse_flag(name, &v),
            None => Ok(false),
        };
        let memory_pool_id = match get("ANE_MEMORY_POOL_ID") {
            Some(v) => Some(v.trim().parse::<i64>().map_err(|_| {
                DeviceError::InvalidArgument(format!("ANE_MEMORY_POOL_ID={v:?} is not an integer"))
            })?),
            None => None,
        };
        Ok(Self {
            disable_power_saving: flag("ANE_DISABLE_POWER_SAVING")?,
            keep_model_wired: flag("ANE_KEEP_MODEL_WIRED")?,
            late_latch: flag("ANE_ENABLE_LATE_LATCH")?,
            skip_prepare: flag("ANE_SKIP_PREPARE")?,
            fw_to_fw_signal: flag("ANE_ENABLE_FW_TO_FW_SIGNAL")?,
            disable_io_fences: flag("ANE_DISABLE_IO_FENCES")?,
            memory_pool_id,
            strict: flag("ANE_STRICT_OPTIONS")?,
            keep_tmpdir: flag("ANE_KEEP_TMPDIR")?,
            cache_policy: match get("ANE_COMPILE_CACHE_POLICY") {
                Some(v) => CachePolicy::parse(&v)?,
                None => CachePolicy::Auto,
            },
        })
    }

    /// Read the switches from the process environment.
    pub fn from_env() -> Result<Self, DeviceError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The options dictionary, in a fixed order (empty by default).
    pub fn entries(&self) -> Vec<(&'static str, OptionValue)> {
        let mut e = vec![];
        if self.disable_power_saving {
            e.push(("kANEFEnablePowerSavingKey", OptionValue::Bool(false)));
        }
        if self.keep_model_wired {
            e.push(("kANEFKeepModelMemoryWiredKey", OptionValue::Bool(true)));
        }
        if self.late_latch {
            e.push(("kANEFEnableLateLatchKey", OptionValue::Bool(true)));
        }
        if self.skip_prepare {
            e.push(("kANEFSkipPreparePhaseKey", OptionValue::Bool(true)));
        }
        if self.fw_to_fw_signal {
            e.push(("kANEFEnableFWToFWSignal", OptionValue::Bool(true)));
        }
        if self.disable_io_fences {
            e.push((
                "kANEFDisableIOFencesUseSharedEventsKey",
                OptionValue::Bool(true),
            ));
        }
        if let Some(id) = self.memory_pool_id {
            e.push(("kANEFMemoryPoolIDKey", OptionValue::Int(id)));
        }
        e
    }

    /// The dictionaries to try, in order: the configured one, then `{}` if it was non-empty and
    /// fallback is allowed. The dictionary that succeeded at load is reused for every eval.
    pub fn attempts(&self) -> Vec<Vec<(&'static str, OptionValue)>> {
        let first = self.entries();
        let fallback = !first.is_empty() && !self.strict;
        let mut v = vec![first];
        if fallback {
            v.push(vec![]);
        }
        v
    }
}

/// Retry of compiler failures (error code 4 only): up to `max_attempts`, sleeping
/// `first_delay` after the first failure, doubling, capped at `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// No retries (tests, probes).
    pub fn once() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sleep after failed attempt `n` (1-based), or `None` when no attempt follows.
    pub fn delay_after(&self, n: u32) -> Option<Duration> {
        if n == 0 || n >= self.max_attempts {
            return None;
        }
        let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
        Some(
            self.first_delay
                .checked_mul(factor)
                .unwrap_or(self.max_delay)
                .min(self.max_delay),
        )
    }

    /// Only compiler failures are retried; bad arguments, budget and allocation errors are not.
    pub fn retries(err: &DeviceError) -> bool {
        matches!(err, DeviceError::Compile { .. })
    }

    /// Run `attempt(n)` (n = 1, 2, …) until it succeeds, fails with a non-retryable error, or
    /// the attempts are used up; `sleep` is called between attempts.
    pub fn run<T>(
        &self,
        mut sleep: impl FnMut(Duration),
        mut attempt: impl FnMut(u32) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let mut n = 1;
        loop {
            match attempt(n) {
                Ok(v) => return Ok(v),
                Err(e) => match self.delay_after(n) {
                    Some(d) if Self::retries(&e) => sleep(d),
                    _ => return Err(e),
                },
            }
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn default_options_are_empty_with_no_fallback() {
        let o = CompileOptions::from_lookup(|_| None).unwrap();
        assert_eq!(o, CompileOptions::default());
        assert!(o.entries().is_empty());
        assert_eq!(o.attempts(), vec![vec![]]);
    }

    #[test]
    fn switches_map_to_the_documented_keys() {
        let o = CompileOptions::from_lookup(env(&[
            ("ANE_DISABLE_POWER_SAVING", "1"),
            ("ANE_KEEP_MODEL_WIRED", "true"),
            ("ANE_MEMORY_POOL_ID", " 7 "),
            ("ANE_SKIP_PREPARE", "0"),
        ]))
        .unwrap();
        assert_eq!(
            o.entries(),
            vec![
                ("kANEFEnablePowerSavingKey", OptionValue::Bool(false)),
                ("kANEFKeepModelMemoryWiredKey", OptionValue::Bool(true)),
                ("kANEFMemoryPoolIDKey", OptionValue::Int(7)),
            ]
        );
        // Non-empty options fall back to {} once.
        let tries = o.attempts();
        assert_eq!(tries.len(), 2);
        assert_eq!(tries[0].len(), 3);
        assert!(tries[1].is_empty());
    }

    #[test]
    fn strict_options_have_no_fallback() {
        let o = CompileOptions::from_lookup(env(&[
            ("ANE_ENABLE_LATE_LATCH", "yes"),
            ("ANE_STRICT_OPTIONS", "on"),
        ]))
        .unwrap();
        assert_eq!(
            o.attempts(),
            vec![vec![("kANEFEnableLateLatchKey", OptionValue::Bool(true))]]
        );
    }

    #[test]
    fn bad_switch_values_are_errors_naming_the_switch() {
        let e = CompileOptions::from_lookup(env(&[("ANE_KEEP_TMPDIR", "maybe")])).unwrap_err();
        assert!(e.to_string().contains("ANE_KEEP_TMPDIR"), "{e}");
        let e = CompileOptions::from_lookup(env(&[("ANE_MEMORY_POOL_ID", "x")])).unwrap_err();
        assert!(e.to_string().contains("ANE_MEMORY_POOL_ID"), "{e}");
    }

    #[test]
    fn cache_policy_switch() {
        let get = |v: &'static str| {
            CompileOptions::from_lookup(move |k| {
                (k == "ANE_COMPILE_CACHE_POLICY").then(|| v.to_string())
            })
        };
        assert_eq!(
            get("preferCached").unwrap().cache_policy,
            CachePolicy::PreferCached
        );
        assert_eq!(
            get("forceCold").unwrap().cache_policy,
            CachePolicy::ForceCold
        );
        assert_eq!(get("auto").unwrap().cache_policy, CachePolicy::Auto);
        assert!(get("sometimes")
            .unwrap_err()
            .to_string()
            .contains("preferCached"));
    }

    #[test]
    fn retry_delays_double_and_cap() {
        let p = RetryPolicy::default();
        let d: Vec<_> = (1..=5).map(|n| p.delay_after(n)).collect();
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(d, vec![ms(100), ms(200), ms(400), ms(800), None]);
        let long = RetryPolicy {
            max_attempts: 10,
            ..p
        };
        assert_eq!(long.delay_after(6), ms(1000));
        assert_eq!(RetryPolicy::once().delay_after(1), None);
    }

    #[test]
    fn only_compiler_failures_are_retried() {
        let p = RetryPolicy::default();
        let mut slept = vec![];
        let mut calls = 0;
        let r: Result<u32, _> = p.run(
            |d| slept.push(d),
            |n| {
                calls += 1;
                if n < 3 {
                    Err(DeviceError::Compile {
                        diagnostics: vec!["transient".into()],
                    })
                } else {
                    Ok(n)
                }
            },
        );
        assert_eq!(r.unwrap(), 3);
        assert_eq!(calls, 3);
        assert_eq!(
            slept,
            vec![Duration::from_millis(100), Duration::from_millis(200)]
        );

        let mut calls = 0;
        let r: Result<(), _> = p.run(
            |_| {},
            |_| {
                calls += 1;
                Err(DeviceError::InvalidArgument("bad".into()))
            },
        );
        assert!(matches!(r, Err(DeviceError::InvalidArgument(_))));
        assert_eq!(calls, 1);

        let mut calls = 0;
        let r: Result<(), _> = p.run(
            |_| {},
            |_| {
                calls += 1;
                Err(DeviceError::Compile {
                    diagnostics: vec![],
                })
            },
        );
        assert!(r.is_err());
        assert_eq!(calls, 5);
    }
}
