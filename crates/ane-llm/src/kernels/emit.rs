//! A small MIL text emitter for the kernel generators (reference §5.1–5.3).
//!
//! One function `main<ios18>`, one statement per line, every non-tensor argument a named
//! `const`, weights as single-tensor BLOBFILEs at offset 64 (§4.1). The emitter only writes
//! text; the `mil` parser and the simulator check it.

use ane::blob::single_fp16_blob;

/// Element type of a value or of a surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dt {
    Fp16,
    Fp32,
}

impl Dt {
    pub fn name(self) -> &'static str {
        match self {
            Dt::Fp16 => "fp16",
            Dt::Fp32 => "fp32",
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Dt::Fp16 => 2,
            Dt::Fp32 => 4,
        }
    }
}

/// A value in the function body: its name, type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Val {
    pub name: String,
    pub dt: Dt,
    pub shape: Vec<usize>,
}

fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(","))
}

fn tensor_type(dt: Dt, shape: &[usize]) -> String {
    format!("tensor<{}, {}>", dt.name(), shape_text(shape))
}

/// A float literal the parser reads back to the same f32 (Rust's shortest round-trip form,
/// never in exponent notation).
fn float_text(v: f32) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// Builder of one MIL function.
#[derive(Debug, Default)]
pub struct Mil {
    inputs: Vec<Val>,
    body: Vec<String>,
    weights: Vec<(String, Vec<u8>)>,
    next: usize,
}

impl Mil {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare a function input.
    pub fn input(&mut self, name: &str, dt: Dt, shape: &[usize]) -> Val {
        let v = Val {
            name: name.to_string(),
            dt,
            shape: shape.to_vec(),
        };
        self.inputs.push(v.clone());
        v
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.next += 1;
        format!("{stem}_{}", self.next)
    }

    fn push_const(&mut self, stem: &str, ty: &str, lit: String) -> String {
        let name = self.fresh(stem);
        self.body.push(format!(
            "        {ty} {name} = const()[name=string(\"{name}\"), val={lit}];"
        ));
        name
    }

    /// An fp16 scalar constant.
    pub fn scalar(&mut self, v: f32) -> String {
        self.push_const("c", "fp16", format!("fp16({})", float_text(v)))
    }

    pub fn int(&mut self, v: i64) -> String {
        self.push_const("i", "int32", format!("int32({v})"))
    }

    pub fn boolean(&mut self, v: bool) -> String {
        self.push_const("b", "bool", format!("bool({v})"))
    }

    pub fn string(&mut self, v: &str) -> String {
        self.push_const("s", "string", format!("string(\"{v}\")"))
    }

    pub fn ints(&mut self, v: &[i64]) -> String {
        let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        let ty = format!("tensor<int32, [{}]>", v.len());
        let lit = format!("{ty}([{}])", items.join(","));
        self.push_const("t", &ty, lit)
    }

    /// An fp16 weight constant stored as `@model_path/weights/<file>.bin`. `values` is
    /// row-major in `shape` (a 1×1 conv weight `[out, in, 1, 1]` is `[out][in]`).
    pub fn weight(&mut self, file: &str, shape: &[usize], values: &[f32]) -> Val {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        let path = format!("@model_path/weights/{file}.bin");
        let ty = tensor_type(Dt::Fp16, shape);
        let lit = format!("{ty}(BLOBFILE(path=string(\"{path}\"), offset=uint64(64)))");
        let name = self.push_const(&format!("w_{file}"), &ty, lit);
        self.weights.push((path, single_fp16_blob(values)));
        Val {
            name,
            dt: Dt::Fp16,
            shape: shape.to_vec(),
        }
    }

    /// Emit `out = op(args)` with result type `dt`/`shape`; `name` = `None` picks a fresh name.
    pub fn op(
        &mut self,
        name: Option<&str>,
        op: &str,
        args: &[(&str, &str)],
        dt: Dt,
        shape: &[usize],
    ) -> Val {
        let out = match name {
            Some(n) => n.to_string(),
            None => self.fresh(op),
        };
        let a: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.body.push(format!(
            "        {} {out} = {op}({})[name=string(\"{out}\")];",
            tensor_type(dt, shape),
            a.join(",")
        ));
        Val {
            name: out,
            dt,
            shape: shape.to_vec(),
        }
    }

    /// The whole program text returning `outputs` in the given order.
    pub fn finish(self, outputs: &[&Val]) -> (String, Vec<(String, Vec<u8>)>) {
        let params: Vec<String> = self
            .inputs
            .iter()
            .map(|v| format!("{} {}", spaced_tensor_type(v.dt, &v.shape), v.name))
            .collect();
        let outs: Vec<&str> = outputs.iter().map(|v| v.name.as_str()).collect();
        let mut text = String::new();
        text.push_str("program(1.3)\n");
        text.push_str(
            "[buildInfo = dict<string, string>({{\"coremlc-component-MIL\", \"3510.2.1\"}, \
             {\"coremlc-version\", \"3505.4.1\"}, {\"coremltools-component-milinternal\", \"\"}, \
             {\"coremltools-version\", \"9.0\"}})]\n",
        );
        text.push_str("{\n");
        text.push_str(&format!("    func main<ios18>({}) {{\n", params.join(", ")));
        for line in &self.body {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&format!("    }} -> ({});\n}}\n", outs.join(", ")));
        (text, self.weights)
    }
}

fn spaced_tensor_type(dt: Dt, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("tensor<{}, [{}]>", dt.name(), dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_without_exponents() {
        assert_eq!(float_text(1e-5), "0.00001");
        assert_eq!(float_text(-10000.0), "-10000.0");
        assert_eq!(float_text(0.125), "0.125");
        let third = 1.0f32 / 3.0;
        assert_eq!(float_text(third).parse::<f32>().ok(), Some(third));
    }

    #[test]
    fn emitted_program_parses() {
        let mut m = Mil::new();
        let x = m.input("i00_x", Dt::Fp16, &[1, 4, 1, 2]);
        let c = m.scalar(0.5);
        let y = m.op(
            Some("o00_y"),
            "mul",
            &[("x", &x.name), ("y", &c)],
            Dt::Fp16,
            &[1, 4, 1, 2],
        );
        let (text, weights) = m.finish(&[&y]);
        assert!(weights.is_empty());
        let p = mil::parse(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        let f = p.main().expect("main");
        assert_eq!(f.inputs[0].0, "i00_x");
        assert_eq!(f.outputs, vec!["o00_y".to_string()]);
    }
}
