//! Printer for the MIL text dialect (ane-reference §5.1–5.2).
//!
//! Two whitespace styles exist in the reference fixtures and both compile:
//! * [`Style::Compact`] (the transformer generators, the default): statement types
//!   `tensor<fp16, [1,768,1,256]>`, arguments `x=a,y=b`, attributes `[name=string("n"), val=...]`;
//!   the function signature keeps the spaced shape `[1, 768, 1, 256]`.
//! * [`Style::Spaced`] (the generic legacy programs `conv.mil`, `matmul.mil`, ...): `x = a, y = b`,
//!   `[1, 4, 1, 2]` everywhere.
//!
//! With the float literal's remembered decimals this reproduces the byte-exact fixtures.

use crate::ast::*;
use std::fmt::Write;

/// Whitespace style of the printed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    #[default]
    Compact,
    Spaced,
}

impl Style {
    /// Separator between list items inside a statement (`,` or `, `).
    fn sep(self) -> &'static str {
        match self {
            Style::Compact => ",",
            Style::Spaced => ", ",
        }
    }

    /// Keyword-argument binder (`=` or ` = `).
    fn eq(self) -> &'static str {
        match self {
            Style::Compact => "=",
            Style::Spaced => " = ",
        }
    }
}

/// Print a program in the default [`Style::Compact`].
pub fn print(program: &Program) -> String {
    print_with(program, Style::Compact)
}

/// Print a program in the given style.
pub fn print_with(program: &Program, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "program({})", program.version);
    if !program.build_info.is_empty() {
        let pairs: Vec<String> = program
            .build_info
            .iter()
            .map(|(k, v)| format!("{{{}, {}}}", quote(k), quote(v)))
            .collect();
        let _ = writeln!(
            out,
            "[buildInfo = dict<string, string>({{{}}})]",
            pairs.join(", ")
        );
    }
    out.push_str("{\n");
    for f in &program.functions {
        print_function(&mut out, f, style);
    }
    out.push_str("}\n");
    out
}

fn print_function(out: &mut String, f: &Function, style: Style) {
    let params: Vec<String> = f
        .inputs
        .iter()
        .map(|(name, ty)| format!("{} {}", tensor_type(ty, Style::Spaced), name))
        .collect();
    let _ = writeln!(
        out,
        "    func {}<{}>({}) {{",
        f.name,
        f.opset,
        params.join(", ")
    );
    for s in &f.body {
        out.push_str("        ");
        statement(out, s, style);
        out.push('\n');
    }
    let _ = writeln!(out, "    }} -> ({});", f.outputs.join(style.sep()));
}

fn statement(out: &mut String, s: &Statement, style: Style) {
    let args: Vec<String> = s
        .args
        .iter()
        .map(|(k, a)| format!("{}{}{}", k, style.eq(), arg(a, style)))
        .collect();
    let _ = write!(
        out,
        "{} {} = {}({})",
        value_type(&s.out_type, style),
        s.out_name,
        s.op,
        args.join(style.sep())
    );
    let mut attrs = vec![format!("name{}string({})", style.eq(), quote(&s.op_name))];
    attrs.extend(
        s.attrs
            .iter()
            .map(|(k, l)| format!("{}{}{}", k, style.eq(), literal(l, style))),
    );
    let _ = write!(out, "[{}];", attrs.join(", "));
}

fn arg(a: &Arg, style: Style) -> String {
    match a {
        Arg::Var(v) => v.clone(),
        Arg::Literal(l) => literal(l, style),
        Arg::List(items) => {
            let items: Vec<String> = items.iter().map(|i| arg(i, style)).collect();
            format!("({})", items.join(style.sep()))
        }
    }
}

/// `tensor<fp16, [1,768,1,256]>` (compact) or `tensor<fp16, [1, 768, 1, 256]>` (spaced).
pub fn tensor_type(t: &TensorType, style: Style) -> String {
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    format!("tensor<{}, [{}]>", t.dtype, dims.join(style.sep()))
}

fn value_type(t: &ValueType, style: Style) -> String {
    match t {
        ValueType::Tensor(t) => tensor_type(t, style),
        ValueType::Scalar(d) => d.to_string(),
    }
}

/// One literal as MIL text.
pub fn literal(l: &Literal, style: Style) -> String {
    match l {
        Literal::Bool(b) => format!("bool({b})"),
        Literal::Int { dtype, value } => format!("{dtype}({value})"),
        Literal::Float {
            dtype,
            value,
            decimals,
        } => format!("{dtype}({})", float_text(*value, *decimals)),
        Literal::Str(s) => format!("string({})", quote(s)),
        Literal::Tensor { ty, data } => {
            let items: Vec<String> = match data {
                TensorData::Int(v) => v.iter().map(|x| x.to_string()).collect(),
                TensorData::Float(v) => v.iter().map(|&x| float_text(x, None)).collect(),
                TensorData::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
                TensorData::Str(v) => v.iter().map(|x| quote(x)).collect(),
            };
            format!("{}([{}])", tensor_type(ty, style), items.join(style.sep()))
        }
        Literal::Blob { ty, blob } => format!(
            "{}(BLOBFILE(path{eq}string({}), offset{eq}uint64({})))",
            tensor_type(ty, style),
            quote(&blob.path),
            blob.offset,
            eq = style.eq()
        ),
    }
}

/// Float text: `%.Nf` when decimals are known, else the shortest round-trip text with a
/// `.0` suffix for integral values (`1.0`, `-0.5`, `0.00001`).
pub fn float_text(value: f64, decimals: Option<u8>) -> String {
    match decimals {
        Some(n) => format!("{:.*}", n as usize, value),
        None => {
            let s = format!("{value}");
            if s.contains('.') {
                s
            } else {
                s + ".0"
            }
        }
    }
}

/// `"text"` with `\` `"` and line breaks escaped.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
