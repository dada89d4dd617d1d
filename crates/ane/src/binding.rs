//! The I/O binding and size rules (reference §3.6, §11.6): one place for what every device and
//! every host must agree on.
//!
//! * **Binding order**: surface slot i is bound to the i-th MIL input (output) in byte-wise
//!   sorted name order ([`binding_order`]).
//! * **Sizes**: a slot's surface holds its tensor densely packed ([`declared_io`] lists name,
//!   type and bytes per slot). The ANE does not check the sizes a host asks for: a wrong size
//!   fails at eval with `status=0x1d`, or silently routes data to the wrong tensor. So every
//!   compile checks the requested sizes slot by slot ([`check_io_sizes`]): smaller than declared
//!   is always an error; larger is allowed only with [`Padding::Allowed`] (Orion pads all I/O of
//!   a kernel to the largest size; the simulator insists on exact sizes by default, which
//!   catches host layout bugs).

use mil::{Program, TensorType, ValueType};

use crate::device::{DeviceError, KernelSpec};

/// One input or output: MIL name, declared tensor type and packed byte size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTensor {
    /// The MIL name (binding order sorts these byte-wise).
    pub name: String,
    /// Declared element type and shape.
    pub ty: TensorType,
    /// Packed size in bytes: the surface size a host allocates.
    pub bytes: usize,
}

/// Inputs and outputs of the main function, each in binding order (byte-wise sorted names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredIo {
    /// Function inputs in binding order.
    pub inputs: Vec<DeclaredTensor>,
    /// Returned values in binding order.
    pub outputs: Vec<DeclaredTensor>,
}

impl DeclaredIo {
    /// Byte sizes in binding order: what a host passes as `input_bytes` / `output_bytes`.
    pub fn sizes(&self) -> (Vec<usize>, Vec<usize>) {
        let bytes = |v: &[DeclaredTensor]| v.iter().map(|t| t.bytes).collect();
        (bytes(&self.inputs), bytes(&self.outputs))
    }
}

/// Permutation `slot → index` that sorts `names` byte-wise (stable): slot i binds
/// `names[binding_order(names)[i]]`.
pub fn binding_order<S: AsRef<str>>(names: &[S]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..names.len()).collect();
    idx.sort_by(|&a, &b| {
        names[a]
            .as_ref()
            .as_bytes()
            .cmp(names[b].as_ref().as_bytes())
    });
    idx
}

/// The I/O of `program`'s main function in binding order, from the declared types.
pub fn declared_io(program: &Program) -> Result<DeclaredIo, String> {
    let func = program.main().ok_or("program has no function")?;
    let tensor = |name: &str| -> Result<DeclaredTensor, String> {
        let ty = match func.value_type(name) {
            Some(ValueType::Tensor(t)) => t,
            Some(ValueType::Scalar(d)) => return Err(format!("`{name}` is a {d} scalar")),
            None => return Err(format!("`{name}` is not defined")),
        };
        let bytes = ty
            .size_bytes()
            .ok_or_else(|| format!("`{name}` ({ty}) cannot live in a surface"))?;
        Ok(DeclaredTensor {
            name: name.to_string(),
            ty,
            bytes,
        })
    };
    let sorted = |v: Vec<DeclaredTensor>| {
        let names: Vec<&str> = v.iter().map(|t| t.name.as_str()).collect();
        let order = binding_order(&names);
        order.into_iter().map(|i| v[i].clone()).collect()
    };
    let inputs = func
        .inputs
        .iter()
        .map(|(n, _)| tensor(n))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = func
        .outputs
        .iter()
        .map(|n| tensor(n))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DeclaredIo {
        inputs: sorted(inputs),
        outputs: sorted(outputs),
    })
}

/// Whether a surface may be larger than its tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// Sizes must match exactly.
    #[default]
    Exact,
    /// Larger surfaces are accepted (never smaller ones).
    Allowed,
}

fn slot_errors(
    what: &str,
    given: &[usize],
    declared: &[DeclaredTensor],
    padding: Padding,
) -> Vec<String> {
    if given.len() != declared.len() {
        return vec![format!(
            "{} {what} sizes given, the program has {} {what}s",
            given.len(),
            declared.len()
        )];
    }
    given
        .iter()
        .zip(declared)
        .enumerate()
        .filter(|(_, (&g, d))| !(g == d.bytes || (padding == Padding::Allowed && g > d.bytes)))
        .map(|(slot, (&g, d))| {
            format!(
                "{what} slot {slot} is `{}` {} = {} bytes, but {g} bytes were requested \
                 (slots are in byte-wise sorted name order)",
                d.name, d.ty, d.bytes
            )
        })
        .collect()
}

/// Check `spec`'s surface sizes against its program, slot by slot in binding order.
pub fn check_io_sizes(spec: &KernelSpec, padding: Padding) -> Result<(), DeviceError> {
    let io = declared_io(&spec.program).map_err(|e| DeviceError::Compile {
        diagnostics: vec![format!("error [io]: {e}")],
    })?;
    let mut diagnostics = slot_errors("input", &spec.input_bytes, &io.inputs, padding);
    diagnostics.extend(slot_errors(
        "output",
        &spec.output_bytes,
        &io.outputs,
        padding,
    ));
    if diagnostics.is_empty() {
        Ok(())
    } else {
        Err(DeviceError::Compile { diagnostics })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs declared (z, a) of different sizes; outputs returned (q, k).
    const MIL: &str = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 8, 1, 4]> z, \
        tensor<fp32, [1, 2, 1, 4]> a) {\n        \
        tensor<fp16, [1, 8, 1, 4]> q = mul(x = z, y = z)[name = string(\"q\")];\n        \
        tensor<fp32, [1, 2, 1, 4]> k = mul(x = a, y = a)[name = string(\"k\")];\n    \
        } -> (q, k);\n}\n";

    fn spec(inputs: Vec<usize>, outputs: Vec<usize>) -> KernelSpec {
        KernelSpec {
            program: mil::parse(MIL).expect("test program parses"),
            weights: vec![],
            input_bytes: inputs,
            output_bytes: outputs,
        }
    }

    #[test]
    fn io_is_listed_in_sorted_name_order() {
        let io = declared_io(&spec(vec![], vec![]).program).unwrap();
        let names = |v: &[DeclaredTensor]| {
            v.iter()
                .map(|t| (t.name.clone(), t.bytes))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&io.inputs),
            [("a".to_string(), 32), ("z".to_string(), 64)]
        );
        assert_eq!(
            names(&io.outputs),
            [("k".to_string(), 32), ("q".to_string(), 64)]
        );
        assert_eq!(io.sizes(), (vec![32, 64], vec![32, 64]));
        assert_eq!(binding_order(&["z", "a", "Z", "a0"]), vec![2, 1, 3, 0]);
    }

    #[test]
    fn sizes_in_declaration_order_are_rejected() {
        for padding in [Padding::Exact, Padding::Allowed] {
            assert!(check_io_sizes(&spec(vec![32, 64], vec![32, 64]), padding).is_ok());
        }
        // Padding only where allowed.
        assert!(check_io_sizes(&spec(vec![64, 64], vec![64, 64]), Padding::Allowed).is_ok());
        match check_io_sizes(&spec(vec![64, 64], vec![32, 64]), Padding::Exact) {
            Err(DeviceError::Compile { diagnostics }) => {
                assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
                assert!(
                    diagnostics[0].contains(
                        "input slot 0 is `a` tensor<fp32, [1, 2, 1, 4]> = 32 bytes, but 64"
                    ),
                    "{diagnostics:?}"
                );
            }
            r => panic!("{r:?}"),
        }
        // Declaration / tuple order (z, a) and (q, k): slot 1 too small on both sides.
        match check_io_sizes(&spec(vec![64, 32], vec![64, 32]), Padding::Allowed) {
            Err(DeviceError::Compile { diagnostics }) => {
                assert_eq!(diagnostics.len(), 2, "{diagnostics:?}");
                assert!(
                    diagnostics[0].contains("input slot 1 is `z`"),
                    "{diagnostics:?}"
                );
                assert!(
                    diagnostics[1].contains("output slot 1 is `q`"),
                    "{diagnostics:?}"
                );
            }
            r => panic!("{r:?}"),
        }
        assert!(check_io_sizes(&spec(vec![32], vec![32, 64]), Padding::Allowed).is_err());
    }

    #[test]
    fn programs_without_a_function_are_refused() {
        let s = KernelSpec::default();
        assert!(declared_io(&s.program).is_err());
        assert!(matches!(
            check_io_sizes(&s, Padding::Allowed),
            Err(DeviceError::Compile { .. })
        ));
    }
}
