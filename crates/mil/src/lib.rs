//! MIL language toolkit: the program model ([`ast`]), the text [`parser`] and [`printer`] for
//! the `program(1.3)` / `func main<ios18>` dialect the ANE compiler accepts, type and shape
//! inference ([`shape`]) over the op table ([`op`]), a kernel [`builder`], the BLOBFILE weight-blob format ([`blob`])
//! and a [validator](mod@validate) for the known ANE rules. This crate owns everything about
//! MIL *text and weights*; executing programs is the job of `ane-sim` (the simulator) and
//! `ane-macos` (the hardware), behind `ane`'s device contract.
//!
//! Facts and formats follow `shared/reference/ane-reference.md` §4 (weight blob), §5 (MIL
//! dialect and kernels) and §11 (hardware limits and traps).
//!
//! ```
//! let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 768, 1, 32]> x) {\n        \
//!             tensor<fp16, [1,768,1,32]> y = relu(x=x)[name=string(\"y\")];\n    } -> (y);\n}\n";
//! let program = mil::parse(text).unwrap();
//! assert_eq!(mil::print(&program), text);
//! let env = mil::infer_shapes(program.main().unwrap()).unwrap();
//! assert_eq!(env["y"].shape(), [1, 768, 1, 32]);
//! assert!(mil::validate(&program, &Default::default()).is_empty());
//! ```

pub mod ast;
pub mod blob;
pub mod builder;
pub mod op;
pub mod parser;
pub mod printer;
pub mod shape;
pub mod validate;

pub use ast::*;
pub use builder::{BuildError, Builder, ConvParams, Names, Value, Weights};
pub use half::f16;
pub use op::{AneSupport, Op, OpClass};
pub use parser::{parse, parse_bytes, ParseError};
pub use printer::{print, print_with, Style};
pub use shape::{infer_shapes, infer_shapes_with, InferOptions, ShapeError, TypeEnv};
pub use validate::{has_errors, validate, Code, Diagnostic, Severity, ValidateOptions};
