//! The private-API calls (macOS only; reference §2.1–§2.7, §3.1, §3.4).
//!
//! `AppleNeuralEngine.framework` is `dlopen`ed once per process; its classes are looked up by
//! name. Every message send below uses the exact C argument and result types of the call table
//! in reference §2.3 (`unsigned int` QoS = `u32`, `BOOL` = `bool`, `NSError**` =
//! `&mut Option<Retained<NSError>>`, `IOSurfaceRef` = `&IOSurfaceRef`); in debug builds `objc2`
//! additionally checks them against the runtime's method encodings.

use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::OnceLock;

use objc2::rc::Retained;
use objc2::runtime::{AnyClass, AnyObject};
use objc2::{msg_send, sel};
use objc2_core_foundation::{CFDictionary, CFNumber, CFRetained, CFString};
use objc2_foundation::{NSArray, NSData, NSDictionary, NSError, NSNumber, NSString};
use objc2_io_surface::{
    kIOSurfaceAllocSize, kIOSurfaceBytesPerElement, kIOSurfaceBytesPerRow, kIOSurfaceHeight,
    kIOSurfacePixelFormat, kIOSurfaceWidth, IOSurfaceLockOptions, IOSurfaceRef,
};

use crate::errors::{map_failure, NsErrorInfo, Stage};
use crate::layout::{WeightEntry, DATA_KEY, OFFSET_KEY};
use crate::options::{OptionValue, QOS};
use ane::device::DeviceError;

/// The private framework binary (§2.1).
pub(crate) const FRAMEWORK_PATH: &CStr =
    c"/System/Library/PrivateFrameworks/AppleNeuralEngine.framework/AppleNeuralEngine";

/// The four classes the bridge cannot work without.
pub(crate) const REQUIRED_CLASSES: [&CStr; 4] = [
    c"_ANEInMemoryModelDescriptor",
    c"_ANEInMemoryModel",
    c"_ANERequest",
    c"_ANEIOSurfaceObject",
];

/// Which `_ANERequest` factory this OS answers (§2.5, tried in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFactory {
    /// `requestWithInputs:inputIndices:outputs:outputIndices:procedureIndex:`
    Plain,
    /// `requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:procedureIndex:`
    WithWeightsBuffer,
}

/// The loaded framework: its required classes and the probed request factory.
#[derive(Debug)]
pub(crate) struct Framework {
    pub descriptor: &'static AnyClass,
    pub model: &'static AnyClass,
    pub request: &'static AnyClass,
    pub io_surface_object: &'static AnyClass,
    pub request_factory: Option<RequestFactory>,
}

fn class(name: &'static CStr) -> Result<&'static AnyClass, String> {
    AnyClass::get(name).ok_or_else(|| missing_classes(&[name]))
}

fn missing_classes(names: &[&CStr]) -> String {
    let names: Vec<String> = names
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    format!(
        "AppleNeuralEngine.framework loaded but class {} is missing: this macOS release does \
         not offer the in-memory ANE API; use --backend ane-sim or --backend cpu",
        names.join(", ")
    )
}

fn load() -> Result<Framework, String> {
    // SAFETY: FRAMEWORK_PATH is a NUL-terminated C string; dlopen has no other preconditions.
    // The handle is deliberately never closed: the classes stay registered for the process.
    let handle = unsafe { libc::dlopen(FRAMEWORK_PATH.as_ptr(), libc::RTLD_NOW) };
    if handle.is_null() {
        // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl call
        // on this thread; it is copied immediately.
        let why = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown dlopen error".to_string()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(format!(
            "cannot load {}: {why} (the ANE needs macOS on Apple silicon, outside a sandbox); \
             use --backend ane-sim or --backend cpu",
            FRAMEWORK_PATH.to_string_lossy()
        ));
    }
    let missing: Vec<&CStr> = REQUIRED_CLASSES
        .into_iter()
        .filter(|n| AnyClass::get(n).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(missing_classes(&missing));
    }
    let request = class(c"_ANERequest")?;
    let has = |s| request.class_method(s).is_some();
    let request_factory = if has(sel!(
        requestWithInputs:inputIndices:outputs:outputIndices:procedureIndex:
    )) {
        Some(RequestFactory::Plain)
    } else if has(sel!(
        requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:procedureIndex:
    )) {
        Some(RequestFactory::WithWeightsBuffer)
    } else {
        None
    };
    let fw = Framework {
        descriptor: class(c"_ANEInMemoryModelDescriptor")?,
        model: class(c"_ANEInMemoryModel")?,
        request,
        io_surface_object: class(c"_ANEIOSurfaceObject")?,
        request_factory,
    };
    check_selectors(&fw)?;
    Ok(fw)
}

/// Feature-probe every selector the bridge sends (§1.3: selectors may change between macOS
/// releases); a missing one is reported up front instead of raising an Objective-C exception
/// mid-run.
fn check_selectors(fw: &Framework) -> Result<(), String> {
    let class_methods = [
        (fw.descriptor, sel!(modelWithMILText:weights:optionsPlist:)),
        (fw.model, sel!(inMemoryModelWithDescriptor:)),
        (fw.io_surface_object, sel!(objectWithIOSurface:)),
    ];
    let instance_methods = [
        sel!(hexStringIdentifier),
        sel!(compileWithQoS:options:error:),
        sel!(loadWithQoS:options:error:),
        sel!(evaluateWithQoS:options:request:error:),
        sel!(unloadWithQoS:error:),
    ];
    let mut missing: Vec<String> = class_methods
        .iter()
        .filter(|(cls, s)| cls.class_method(*s).is_none())
        .map(|(cls, s)| {
            format!(
                "+[{} {}]",
                cls.name().to_string_lossy(),
                s.name().to_string_lossy()
            )
        })
        .collect();
    missing.extend(
        instance_methods
            .iter()
            .filter(|s| fw.model.instance_method(**s).is_none())
            .map(|s| format!("-[_ANEInMemoryModel {}]", s.name().to_string_lossy())),
    );
    if fw.request_factory.is_none() {
        missing.push("+[_ANERequest requestWithInputs:inputIndices:outputs:outputIndices:(weightsBuffer:)procedureIndex:]".into());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "AppleNeuralEngine.framework on this macOS release lacks {}; use --backend ane-sim \
             or --backend cpu",
            missing.join(", ")
        ))
    }
}

/// The framework, loaded once per process.
pub(crate) fn framework() -> Result<&'static Framework, DeviceError> {
    static FRAMEWORK: OnceLock<Result<Framework, String>> = OnceLock::new();
    FRAMEWORK
        .get_or_init(load)
        .as_ref()
        .map_err(|e| DeviceError::Unavailable(e.clone()))
}

/// Owned `NSError` details.
pub(crate) fn error_info(err: &Option<Retained<NSError>>) -> Option<NsErrorInfo> {
    err.as_ref().map(|e| NsErrorInfo {
        domain: e.domain().to_string(),
        code: e.code() as i64,
        description: e.localizedDescription().to_string(),
    })
}

/// Options dictionary (`NSDictionary<NSString, NSNumber>`; §2.3 step 7).
pub(crate) fn options_dictionary(
    entries: &[(&'static str, OptionValue)],
) -> Retained<NSDictionary<NSString, AnyObject>> {
    let keys: Vec<Retained<NSString>> =
        entries.iter().map(|(k, _)| NSString::from_str(k)).collect();
    let values: Vec<Retained<NSNumber>> = entries
        .iter()
        .map(|(_, v)| match *v {
            OptionValue::Bool(b) => NSNumber::new_bool(b),
            OptionValue::Int(i) => NSNumber::new_i64(i),
        })
        .collect();
    let key_refs: Vec<&NSString> = keys.iter().map(|k| &**k).collect();
    let value_refs: Vec<&AnyObject> = values.iter().map(|v| -> &AnyObject { v }).collect();
    NSDictionary::from_slices(&key_refs, &value_refs)
}

/// Weight dictionary `{ path: { "offset": 0, "data": NSData } }` (§2.3 step 2). Empty for
/// weight-free programs — never nil. The blob bytes are copied into the NSData.
pub(crate) fn weight_dictionary(
    entries: &[WeightEntry<'_>],
) -> Retained<NSDictionary<NSString, NSDictionary<NSString, AnyObject>>> {
    let offset_key = NSString::from_str(OFFSET_KEY);
    let data_key = NSString::from_str(DATA_KEY);
    let keys: Vec<Retained<NSString>> = entries.iter().map(|e| NSString::from_str(e.key)).collect();
    let inner: Vec<Retained<NSDictionary<NSString, AnyObject>>> = entries
        .iter()
        .map(|e| {
            let offset = NSNumber::new_u64(e.offset);
            let data = NSData::with_bytes(e.data);
            let values: [&AnyObject; 2] = [&offset, &data];
            NSDictionary::from_slices(&[&*offset_key, &*data_key], &values)
        })
        .collect();
    let key_refs: Vec<&NSString> = keys.iter().map(|k| &**k).collect();
    let inner_refs: Vec<&NSDictionary<NSString, AnyObject>> = inner.iter().map(|d| &**d).collect();
    NSDictionary::from_slices(&key_refs, &inner_refs)
}

/// Steps 3–4: descriptor from MIL (as NSData) + weights, then the in-memory model.
pub(crate) fn new_model(
    fw: &Framework,
    mil_text: &str,
    weights: &NSDictionary<NSString, NSDictionary<NSString, AnyObject>>,
) -> Result<Retained<AnyObject>, DeviceError> {
    let mil = NSData::with_bytes(mil_text.as_bytes());
    let no_plist: Option<&AnyObject> = None;
    // SAFETY: `+modelWithMILText:weights:optionsPlist:` takes (NSData*, NSDictionary*, id) and
    // returns an autoreleased descriptor or nil (§2.3 call table); every argument is a valid
    // object or nil.
    let descriptor: Option<Retained<AnyObject>> = unsafe {
        msg_send![fw.descriptor, modelWithMILText: &*mil, weights: weights, optionsPlist: no_plist]
    };
    let descriptor = descriptor.ok_or_else(|| map_failure(Stage::Descriptor, None))?;
    // SAFETY: `+inMemoryModelWithDescriptor:` takes the descriptor object and returns an
    // autoreleased `_ANEInMemoryModel` or nil.
    let model: Option<Retained<AnyObject>> =
        unsafe { msg_send![fw.model, inMemoryModelWithDescriptor: &*descriptor] };
    model.ok_or_else(|| map_failure(Stage::Model, None))
}

/// Step 8: the content-derived identifier naming the temp directory.
pub(crate) fn hex_identifier(model: &AnyObject) -> Result<String, DeviceError> {
    // SAFETY: `-hexStringIdentifier` takes no arguments and returns an NSString (or nil).
    let hex: Option<Retained<NSString>> = unsafe { msg_send![model, hexStringIdentifier] };
    hex.map(|h| h.to_string())
        .ok_or_else(|| DeviceError::Compile {
            diagnostics: vec!["hexStringIdentifier returned nil".into()],
        })
}

/// Step 6: `-purgeCompiledModel` (forced cold compile), if the model answers it.
pub(crate) fn purge_compiled(model: &AnyObject) {
    if model.class().responds_to(sel!(purgeCompiledModel)) {
        // SAFETY: `-purgeCompiledModel` takes no arguments and returns void (§2.3 call table);
        // the selector was checked above.
        unsafe {
            let () = msg_send![model, purgeCompiledModel];
        }
    }
}

/// Step 11: `-compileWithQoS:21 options:error:`.
pub(crate) fn compile(
    model: &AnyObject,
    options: &NSDictionary<NSString, AnyObject>,
) -> Result<(), DeviceError> {
    let mut err: Option<Retained<NSError>> = None;
    // SAFETY: (unsigned int, NSDictionary*, NSError**) → BOOL per §2.3; `err` is a valid
    // writeback slot for an autoreleased NSError.
    let ok: bool =
        unsafe { msg_send![model, compileWithQoS: QOS, options: options, error: &mut err] };
    if ok {
        Ok(())
    } else {
        Err(map_failure(Stage::Compile, error_info(&err).as_ref()))
    }
}

/// Step 12: `-loadWithQoS:21 options:error:`.
pub(crate) fn load_model(
    model: &AnyObject,
    options: &NSDictionary<NSString, AnyObject>,
) -> Result<(), DeviceError> {
    let mut err: Option<Retained<NSError>> = None;
    // SAFETY: (unsigned int, NSDictionary*, NSError**) → BOOL per §2.3.
    let ok: bool = unsafe { msg_send![model, loadWithQoS: QOS, options: options, error: &mut err] };
    if ok {
        Ok(())
    } else {
        Err(map_failure(Stage::Load, error_info(&err).as_ref()))
    }
}

/// §2.7: `-unloadWithQoS:21 error:`.
pub(crate) fn unload_model(model: &AnyObject) -> Result<(), DeviceError> {
    let mut err: Option<Retained<NSError>> = None;
    // SAFETY: (unsigned int, NSError**) → BOOL per §2.3.
    let ok: bool = unsafe { msg_send![model, unloadWithQoS: QOS, error: &mut err] };
    if ok {
        Ok(())
    } else {
        Err(map_failure(Stage::Unload, error_info(&err).as_ref()))
    }
}

/// §2.6: `-evaluateWithQoS:21 options:request:error:` (synchronous).
pub(crate) fn evaluate(
    model: &AnyObject,
    options: &NSDictionary<NSString, AnyObject>,
    request: &AnyObject,
) -> Result<(), DeviceError> {
    let mut err: Option<Retained<NSError>> = None;
    // SAFETY: (unsigned int, NSDictionary*, _ANERequest*, NSError**) → BOOL per §2.3.
    let ok: bool = unsafe {
        msg_send![model, evaluateWithQoS: QOS, options: options, request: request, error: &mut err]
    };
    if ok {
        Ok(())
    } else {
        Err(map_failure(Stage::Eval, error_info(&err).as_ref()))
    }
}

/// §3.1: a flat byte IOSurface of `bytes` bytes.
pub(crate) fn create_surface(bytes: usize) -> Result<CFRetained<IOSurfaceRef>, DeviceError> {
    let fail = |reason: &str| DeviceError::SurfaceAllocation {
        bytes,
        reason: reason.to_string(),
    };
    if bytes == 0 {
        return Err(fail("zero-sized surface"));
    }
    let n = i64::try_from(bytes).map_err(|_| fail("size does not fit a CFNumber"))?;
    let (size, one, zero) = (
        CFNumber::new_i64(n),
        CFNumber::new_i64(1),
        CFNumber::new_i64(0),
    );
    // SAFETY: the kIOSurface* keys are immutable CFString constants exported by IOSurface.
    let keys: [&CFString; 6] = unsafe {
        [
            kIOSurfaceWidth,
            kIOSurfaceHeight,
            kIOSurfaceBytesPerElement,
            kIOSurfaceBytesPerRow,
            kIOSurfaceAllocSize,
            kIOSurfacePixelFormat,
        ]
    };
    let values: [&CFNumber; 6] = [&size, &one, &one, &size, &size, &zero];
    let props = CFDictionary::<CFString, CFNumber>::from_slices(&keys, &values);
    // SAFETY: the dictionary maps CFString keys to CFNumber values as IOSurfaceCreate expects.
    let surface = unsafe { IOSurfaceRef::new(props.as_opaque()) }
        .ok_or_else(|| fail("IOSurfaceCreate returned NULL"))?;
    if surface.alloc_size() < bytes {
        return Err(fail("IOSurface is smaller than requested"));
    }
    Ok(surface)
}

/// §2.3 step 18: `+[_ANEIOSurfaceObject objectWithIOSurface:]`.
pub(crate) fn wrap_surface(
    fw: &Framework,
    surface: &IOSurfaceRef,
) -> Result<Retained<AnyObject>, DeviceError> {
    // SAFETY: takes an IOSurfaceRef (encoded `^{__IOSurface=}`) and returns an autoreleased
    // wrapper or nil; the wrapper retains the surface.
    let obj: Option<Retained<AnyObject>> =
        unsafe { msg_send![fw.io_surface_object, objectWithIOSurface: surface] };
    obj.ok_or_else(|| DeviceError::SurfaceAllocation {
        bytes: surface.alloc_size(),
        reason: "_ANEIOSurfaceObject objectWithIOSurface: returned nil".into(),
    })
}

/// §2.5: a request binding `inputs[i]` / `outputs[i]` to index i, procedure 0.
pub(crate) fn new_request(
    fw: &Framework,
    inputs: &[&AnyObject],
    outputs: &[&AnyObject],
) -> Result<Retained<AnyObject>, DeviceError> {
    let indices = |n: usize| {
        let nums: Vec<Retained<NSNumber>> = (0..n).map(NSNumber::new_usize).collect();
        NSArray::from_retained_slice(&nums)
    };
    let ins: Retained<NSArray<AnyObject>> = NSArray::from_slice(inputs);
    let outs: Retained<NSArray<AnyObject>> = NSArray::from_slice(outputs);
    let (in_idx, out_idx) = (indices(inputs.len()), indices(outputs.len()));
    let procedure = NSNumber::new_usize(0);
    let no_weights: Option<&AnyObject> = None;
    let request: Option<Retained<AnyObject>> = match fw.request_factory {
        // SAFETY: (NSArray*, NSArray<NSNumber>*, NSArray*, NSArray<NSNumber>*, NSNumber*) →
        // autoreleased _ANERequest or nil (§2.3 call table, §2.5).
        Some(RequestFactory::Plain) => unsafe {
            msg_send![fw.request, requestWithInputs: &*ins, inputIndices: &*in_idx,
                outputs: &*outs, outputIndices: &*out_idx, procedureIndex: &*procedure]
        },
        // SAFETY: as above with a nil weightsBuffer (id) before procedureIndex (§2.5).
        Some(RequestFactory::WithWeightsBuffer) => unsafe {
            msg_send![fw.request, requestWithInputs: &*ins, inputIndices: &*in_idx,
                outputs: &*outs, outputIndices: &*out_idx, weightsBuffer: no_weights,
                procedureIndex: &*procedure]
        },
        None => None,
    };
    request.ok_or_else(|| map_failure(Stage::Request, None))
}

/// Unlocks an IOSurface when dropped (also if the access closure panics).
struct LockGuard<'a> {
    surface: &'a IOSurfaceRef,
    options: IOSurfaceLockOptions,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the surface was locked with the same options by `lock`; a null seed pointer
        // is allowed.
        unsafe {
            self.surface.unlock(self.options, ptr::null_mut());
        }
    }
}

fn lock(
    surface: &IOSurfaceRef,
    options: IOSurfaceLockOptions,
) -> Result<LockGuard<'_>, DeviceError> {
    // SAFETY: a null seed pointer is allowed.
    let kr = unsafe { surface.lock(options, ptr::null_mut()) };
    if kr != 0 {
        return Err(DeviceError::Eval(format!(
            "IOSurfaceLock failed (kern_return {kr})"
        )));
    }
    Ok(LockGuard { surface, options })
}

/// §3.4: read access to the first `len` bytes under a read-only lock.
pub(crate) fn read_surface(
    surface: &IOSurfaceRef,
    len: usize,
    f: &mut dyn FnMut(&[u8]),
) -> Result<(), DeviceError> {
    if len > surface.alloc_size() {
        return Err(DeviceError::OutOfBounds(format!(
            "{len} bytes requested from a {}-byte IOSurface",
            surface.alloc_size()
        )));
    }
    let _guard = lock(surface, IOSurfaceLockOptions::ReadOnly)?;
    let base: *const c_void = surface.base_address().as_ptr();
    // SAFETY: the surface is locked for reading, its base address is valid for alloc_size ≥ len
    // bytes while locked, and the slice does not outlive the guard.
    let bytes = unsafe { std::slice::from_raw_parts(base.cast::<u8>(), len) };
    f(bytes);
    Ok(())
}

/// §3.4: write access to the first `len` bytes under a read-write lock.
pub(crate) fn write_surface(
    surface: &IOSurfaceRef,
    len: usize,
    f: &mut dyn FnMut(&mut [u8]),
) -> Result<(), DeviceError> {
    if len > surface.alloc_size() {
        return Err(DeviceError::OutOfBounds(format!(
            "{len} bytes requested from a {}-byte IOSurface",
            surface.alloc_size()
        )));
    }
    let _guard = lock(surface, IOSurfaceLockOptions::empty())?;
    let base: *mut c_void = surface.base_address().as_ptr();
    // SAFETY: the surface is locked for writing, its base address is valid for alloc_size ≥ len
    // bytes, the caller holds `&mut` access to the device (no other Rust view exists), and the
    // slice does not outlive the guard.
    let bytes = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), len) };
    f(bytes);
    Ok(())
}
