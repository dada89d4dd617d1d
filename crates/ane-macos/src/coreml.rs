//! Apple's own path to the Neural Engine, for comparison: a CoreML ML Program written by
//! `scripts/coreml_export.py` (one token per prediction, KV cache in `MLState`), run with
//! `MLComputeUnits.cpuAndNeuralEngine` (CoreML decides which ops go to the ANE). What
//! `espresso bench --backend ane --vs coreml MODEL.mlpackage` times next to ours.
//!
//! The package's interface (see the script): inputs `input_ids` int32 `[1, 1]` and `position`
//! int32 `[1]`, per-layer cache states, output `logits` fp32 `[1, vocab]`. A prompt is fed one
//! token per prediction; then greedy decoding, one prediction per token.
//!
//! macOS 15+ only (stateful models); elsewhere [`greedy`] returns
//! [`CoremlError::Unsupported`].

use std::path::Path;

/// Why a CoreML run failed.
#[derive(Debug, thiserror::Error)]
pub enum CoremlError {
    /// Not macOS: CoreML does not exist here.
    #[error(
        "CoreML is not available on this system ({0}): `--vs coreml` needs macOS 15 or later \
         on Apple silicon (converting with scripts/coreml_export.py works anywhere)"
    )]
    Unsupported(String),
    /// The package could not be compiled or loaded.
    #[error("cannot load the CoreML model {path}: {reason}")]
    Load { path: String, reason: String },
    /// A prediction failed or returned something other than the expected logits.
    #[error("CoreML prediction failed at position {pos}: {reason}")]
    Predict { pos: usize, reason: String },
    #[error("invalid CoreML run: {0}")]
    Invalid(String),
}

/// What one greedy CoreML run did, timed on the host (wall clock).
#[derive(Debug, Clone, PartialEq)]
pub struct CoremlRun {
    /// Compile (`.mlpackage` → `.mlmodelc`) and load, milliseconds.
    pub load_ms: f64,
    /// The prompt, one prediction per token, milliseconds in total.
    pub prefill_ms: f64,
    /// Mean time of one decode prediction (after the prompt), milliseconds.
    pub decode_ms_per_token: f64,
    /// Greedy tokens chosen after the prompt (the first from the prompt's last prediction).
    pub tokens: Vec<u32>,
    /// Compute units requested.
    pub compute_units: &'static str,
}

/// Whether CoreML can run here (macOS); the error says what is needed otherwise.
pub fn availability() -> Result<(), CoremlError> {
    if cfg!(target_vendor = "apple") {
        Ok(())
    } else {
        Err(CoremlError::Unsupported(crate::platform()))
    }
}

/// Lowest index of the maximum (strict `>`, as `engine::argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Feed `prompt` (one prediction per token, a fresh cache) to the CoreML package at `path` on
/// the CPU and the Neural Engine, then decode greedily until `gen_tokens` tokens are chosen
/// (the last prompt prediction chooses the first); `max_seq` bounds the positions (the
/// package's cache slots).
pub fn greedy(
    path: &Path,
    prompt: &[u32],
    gen_tokens: usize,
    max_seq: usize,
) -> Result<CoremlRun, CoremlError> {
    if prompt.is_empty() || gen_tokens == 0 {
        return Err(CoremlError::Invalid(
            "need a prompt and at least one token to generate".into(),
        ));
    }
    if prompt.len() + gen_tokens > max_seq + 1 {
        return Err(CoremlError::Invalid(format!(
            "{} prompt + {gen_tokens} generated tokens do not fit {max_seq} cache slots",
            prompt.len()
        )));
    }
    imp::greedy(path, prompt, gen_tokens)
}

#[cfg(not(target_vendor = "apple"))]
mod imp {
    use super::{CoremlError, CoremlRun};
    use std::path::Path;

    pub fn greedy(_: &Path, _: &[u32], _: usize) -> Result<CoremlRun, CoremlError> {
        Err(CoremlError::Unsupported(crate::platform()))
    }
}

#[cfg(target_vendor = "apple")]
mod imp {
    use super::{argmax, CoremlError, CoremlRun};
    use std::path::Path;
    use std::time::Instant;

    use objc2::rc::Retained;
    use objc2::runtime::{AnyObject, ProtocolObject};
    use objc2::AnyThread;
    use objc2_core_ml::{
        MLComputeUnits, MLDictionaryFeatureProvider, MLFeatureProvider, MLFeatureValue, MLModel,
        MLModelConfiguration, MLMultiArray, MLMultiArrayDataType, MLState,
    };
    use objc2_foundation::{NSArray, NSDictionary, NSError, NSNumber, NSString, NSURL};

    fn describe(e: &NSError) -> String {
        e.localizedDescription().to_string()
    }

    /// An int32 multi-array of `shape` holding `value` in every element.
    fn int_array(shape: &[usize], value: i32) -> Result<Retained<MLMultiArray>, String> {
        let dims: Vec<Retained<NSNumber>> = shape.iter().map(|&d| NSNumber::new_usize(d)).collect();
        let shape_ns = NSArray::from_retained_slice(&dims);
        // SAFETY: `-initWithShape:dataType:error:` on a fresh allocation, with an NSArray of
        // NSNumbers and a valid data type; the error is returned, not thrown.
        let arr = unsafe {
            MLMultiArray::initWithShape_dataType_error(
                MLMultiArray::alloc(),
                &shape_ns,
                MLMultiArrayDataType::Int32,
            )
        }
        .map_err(|e| describe(&e))?;
        // SAFETY: `count` elements of int32 (the data type just requested), contiguous
        // (initWithShape:dataType: uses the first-major contiguous layout); the array is
        // alive and not shared while we write.
        unsafe {
            let n = arr.count().max(0) as usize;
            #[allow(deprecated)] // the block-based accessor needs block2; this is synchronous
            let p = arr.dataPointer().cast::<i32>().as_ptr();
            std::slice::from_raw_parts_mut(p, n).fill(value);
        }
        Ok(arr)
    }

    /// The inputs of one prediction: token `tok` at `pos`.
    fn inputs(tok: u32, pos: usize) -> Result<Retained<MLDictionaryFeatureProvider>, String> {
        let ids = int_array(&[1, 1], tok as i32)?;
        let position = int_array(&[1], pos as i32)?;
        // SAFETY: class methods wrapping valid multi-arrays.
        let (v_ids, v_pos) = unsafe {
            (
                MLFeatureValue::featureValueWithMultiArray(&ids),
                MLFeatureValue::featureValueWithMultiArray(&position),
            )
        };
        let keys = [
            NSString::from_str("input_ids"),
            NSString::from_str("position"),
        ];
        let key_refs: Vec<&NSString> = keys.iter().map(|k| &**k).collect();
        let values: [&AnyObject; 2] = [&v_ids, &v_pos];
        let dict: Retained<NSDictionary<NSString, AnyObject>> =
            NSDictionary::from_slices(&key_refs, &values);
        // SAFETY: a dictionary of NSString keys to MLFeatureValue objects, as the initializer
        // requires.
        unsafe {
            MLDictionaryFeatureProvider::initWithDictionary_error(
                MLDictionaryFeatureProvider::alloc(),
                &dict,
            )
        }
        .map_err(|e| describe(&e))
    }

    /// `logits` of a prediction's outputs as f32 (fp32 or fp16 arrays, any strides).
    fn logits(out: &ProtocolObject<dyn MLFeatureProvider>) -> Result<Vec<f32>, String> {
        let name = NSString::from_str("logits");
        // SAFETY: protocol method on a live output provider.
        let value = unsafe { out.featureValueForName(&name) }
            .ok_or("the model has no `logits` output (not written by coreml_export.py?)")?;
        // SAFETY: plain getter.
        let arr = unsafe { value.multiArrayValue() }.ok_or("`logits` is not a multi-array")?;
        // SAFETY: getters of a live array.
        let (shape, strides, dt) = unsafe { (arr.shape(), arr.strides(), arr.dataType()) };
        let last = shape
            .count()
            .checked_sub(1)
            .ok_or("`logits` has no dimensions")?;
        let n = shape.objectAtIndex(last).as_usize();
        let stride = strides.objectAtIndex(last).as_usize();
        let mut v = Vec::with_capacity(n);
        // SAFETY: the array's own shape and strides bound every read of the last axis (the
        // leading axes are 1); the element type is the one `dataType` reports; the array
        // outlives the reads.
        unsafe {
            #[allow(deprecated)] // synchronous access (the block-based one needs block2)
            let base = arr.dataPointer().as_ptr();
            match dt {
                MLMultiArrayDataType::Float32 => {
                    let p = base.cast::<f32>();
                    v.extend((0..n).map(|i| *p.add(i * stride)));
                }
                MLMultiArrayDataType::Float16 => {
                    let p = base.cast::<u16>();
                    v.extend((0..n).map(|i| ane::fp16::f16_bits_to_f32(*p.add(i * stride))));
                }
                other => return Err(format!("`logits` has data type {other:?}, not fp32/fp16")),
            }
        }
        Ok(v)
    }

    fn predict(
        model: &MLModel,
        state: &MLState,
        tok: u32,
        pos: usize,
    ) -> Result<Vec<f32>, CoremlError> {
        let fail = |reason: String| CoremlError::Predict { pos, reason };
        let feats = inputs(tok, pos).map_err(fail)?;
        let provider = ProtocolObject::from_ref(&*feats);
        // SAFETY: a stateful prediction with the model's own state object and a feature
        // provider holding exactly the declared inputs; errors are returned.
        let out = unsafe { model.predictionFromFeatures_usingState_error(provider, state) }
            .map_err(|e| fail(describe(&e)))?;
        logits(&out).map_err(fail)
    }

    pub fn greedy(path: &Path, prompt: &[u32], gen: usize) -> Result<CoremlRun, CoremlError> {
        let load_err = |reason: String| CoremlError::Load {
            path: path.display().to_string(),
            reason,
        };
        let t = Instant::now();
        let url = NSURL::fileURLWithPath(&NSString::from_str(&path.to_string_lossy()));
        // SAFETY: compile a package from a file URL; errors are returned. (The synchronous
        // form is deprecated in favour of a completion handler.)
        #[allow(deprecated)]
        let compiled = unsafe { MLModel::compileModelAtURL_error(&url) }
            .map_err(|e| load_err(describe(&e)))?;
        // SAFETY: a fresh configuration object; setter of a plain enum property.
        let config = unsafe {
            let c = MLModelConfiguration::new();
            c.setComputeUnits(MLComputeUnits::CPUAndNeuralEngine);
            c
        };
        // SAFETY: load from the compiled model's URL with a valid configuration.
        let model =
            unsafe { MLModel::modelWithContentsOfURL_configuration_error(&compiled, &config) }
                .map_err(|e| load_err(describe(&e)))?;
        // SAFETY: a stateful model (macOS 15+) hands out a fresh, zeroed state.
        let state = unsafe { model.newState() };
        let load_ms = t.elapsed().as_secs_f64() * 1e3;

        let t = Instant::now();
        let mut last = Vec::new();
        for (pos, &tok) in prompt.iter().enumerate() {
            last = predict(&model, &state, tok, pos)?;
        }
        let prefill_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut tokens = vec![argmax(&last)];
        let t = Instant::now();
        while tokens.len() < gen {
            let pos = prompt.len() + tokens.len() - 1;
            let tok = tokens[tokens.len() - 1];
            last = predict(&model, &state, tok, pos)?;
            tokens.push(argmax(&last));
        }
        let steps = (gen - 1).max(1);
        Ok(CoremlRun {
            load_ms,
            prefill_ms,
            decode_ms_per_token: t.elapsed().as_secs_f64() * 1e3 / steps as f64,
            tokens,
            compute_units: "cpuAndNeuralEngine",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_lowest_index_of_the_maximum() {
        assert_eq!(argmax(&[0.5, 2.0, -1.0, 2.0]), 1);
        assert_eq!(argmax(&[3.0]), 0);
    }

    #[test]
    fn runs_that_cannot_fit_are_refused_before_touching_coreml() {
        let p = Path::new("missing.mlpackage");
        assert!(matches!(
            greedy(p, &[], 4, 512),
            Err(CoremlError::Invalid(_))
        ));
        assert!(matches!(
            greedy(p, &[1], 0, 512),
            Err(CoremlError::Invalid(_))
        ));
        let long = vec![1u32; 500];
        let e = greedy(p, &long, 20, 512).err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("do not fit 512")), "too long");
    }

    #[cfg(not(target_vendor = "apple"))]
    #[test]
    fn elsewhere_than_macos_the_error_says_what_is_needed() {
        let e = greedy(Path::new("m.mlpackage"), &[1, 2], 4, 512)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("CoreML is not available"), "{e}");
        assert!(e.contains("macOS 15"), "{e}");
    }
}
