//! The I/O a MIL program declares, in binding order (reference §3.6, §11.6).
//!
//! The ANE does not check the surface sizes a host asks for against the program: a wrong size
//! fails at eval with `status=0x1d`, or silently routes data to the wrong tensor. So before a
//! hardware compile the requested sizes are checked against the program's own declarations,
//! slot by slot in byte-wise sorted name order, as the simulator does. Requested sizes may be
//! larger than declared (padding, as Orion does for non-uniform outputs), never smaller.

use crate::device::{DeviceError, KernelSpec};

/// One input or output: MIL name and packed byte size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTensor {
    pub name: String,
    pub bytes: usize,
}

/// Inputs and outputs of the main function, each sorted byte-wise by name (binding order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredIo {
    pub inputs: Vec<DeclaredTensor>,
    pub outputs: Vec<DeclaredTensor>,
}

/// Parse `mil_text` and list its I/O in binding order.
pub fn declared_io(mil_text: &str) -> Result<DeclaredIo, String> {
    let program =
        mil::parse(mil_text).map_err(|e| format!("{}:{}: {}", e.line, e.column, e.message))?;
    let func = program.main().ok_or("program has no function")?;
    let tensor = |name: &str| -> Result<DeclaredTensor, String> {
        let bytes = match func.value_type(name) {
            Some(mil::ValueType::Tensor(t)) => t.size_bytes(),
            _ => None,
        }
        .ok_or_else(|| format!("`{name}` is not a sized tensor"))?;
        Ok(DeclaredTensor {
            name: name.to_string(),
            bytes,
        })
    };
    let sorted = |mut v: Vec<DeclaredTensor>| {
        v.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        v
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

fn slot_errors(what: &str, given: &[usize], declared: &[DeclaredTensor]) -> Vec<String> {
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
        .filter(|(_, (&g, d))| g < d.bytes)
        .map(|(slot, (&g, d))| {
            format!(
                "{what} slot {slot} is `{}` = {} bytes, but only {g} bytes were requested \
                 (slots are in byte-wise sorted name order)",
                d.name, d.bytes
            )
        })
        .collect()
}

/// Check `spec`'s surface sizes against its MIL. A program this crate's parser cannot read is
/// not checked here (the hardware compiler is the judge of what it accepts).
pub fn check_io_sizes(spec: &KernelSpec) -> Result<(), DeviceError> {
    let Ok(io) = declared_io(&spec.mil_text) else {
        return Ok(());
    };
    let mut diagnostics = slot_errors("input", &spec.input_bytes, &io.inputs);
    diagnostics.extend(slot_errors("output", &spec.output_bytes, &io.outputs));
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
            mil_text: MIL.into(),
            weights: vec![],
            input_bytes: inputs,
            output_bytes: outputs,
        }
    }

    #[test]
    fn io_is_listed_in_sorted_name_order() {
        let io = declared_io(MIL).unwrap();
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
    }

    #[test]
    fn sizes_in_declaration_order_are_rejected() {
        assert!(check_io_sizes(&spec(vec![32, 64], vec![32, 64])).is_ok());
        // Padding is allowed.
        assert!(check_io_sizes(&spec(vec![64, 64], vec![64, 64])).is_ok());
        // Declaration / tuple order (z, a) and (q, k): slot 1 too small on both sides.
        match check_io_sizes(&spec(vec![64, 32], vec![64, 32])) {
            Err(DeviceError::Compile { diagnostics }) => {
                assert_eq!(diagnostics.len(), 2, "{diagnostics:?}");
                assert!(
                    diagnostics[0].contains("input slot 1 is `z` = 64 bytes"),
                    "{diagnostics:?}"
                );
                assert!(
                    diagnostics[1].contains("output slot 1 is `q`"),
                    "{diagnostics:?}"
                );
            }
            r => panic!("{r:?}"),
        }
        assert!(check_io_sizes(&spec(vec![32], vec![32, 64])).is_err());
    }

    #[test]
    fn unparsable_programs_are_left_to_the_compiler() {
        let s = KernelSpec {
            mil_text: "not mil".into(),
            input_bytes: vec![1],
            ..Default::default()
        };
        assert!(declared_io(&s.mil_text).is_err());
        assert!(check_io_sizes(&s).is_ok());
    }
}
