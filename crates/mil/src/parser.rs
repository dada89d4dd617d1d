//! Parser for the MIL text dialect (ane-reference §5.1–5.3). Whitespace between tokens is
//! free, so both fixture styles (`name = string("x")`, `[1, 4, 1, 2]` and
//! `name=string("x")`, `[1,768,1,256]`) parse to the same [`Program`].
//!
//! Grammar (informal):
//! ```text
//! program   := 'program' '(' VERSION ')' build_info? '{' function* '}'
//! build_info:= '[' 'buildInfo' '=' 'dict' '<' 'string' ',' 'string' '>' '(' '{' pair,* '}' ')' ']'
//! function  := 'func' IDENT '<' IDENT '>' '(' (tensor_type IDENT),* ')' '{' stmt* '}' '->' '(' IDENT,* ')' ';'
//! stmt      := type IDENT '=' IDENT '(' (IDENT '=' arg),* ')' ('[' (IDENT '=' literal),* ']')? ';'
//! arg       := literal | IDENT | '(' arg,* ')'
//! literal   := DTYPE '(' scalar ')' | tensor_type '(' ('[' elem,* ']' | BLOBFILE(...)) ')'
//! ```

use crate::ast::*;
use std::fmt;

/// A parse failure with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Largest dimension the parser accepts (keeps shape arithmetic far from overflow).
pub const MAX_DIM: usize = i32::MAX as usize;

/// Deepest nesting of `(..)` argument tuples accepted (keeps recursion bounded).
const MAX_ARG_NESTING: usize = 16;

/// Parse MIL text into a [`Program`].
pub fn parse(text: &str) -> Result<Program, ParseError> {
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        end: end_position(text),
    };
    p.program()
}

/// Parse MIL bytes (must be UTF-8).
pub fn parse_bytes(bytes: &[u8]) -> Result<Program, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            // The prefix is valid UTF-8 by construction.
            let (line, column) = end_position(std::str::from_utf8(valid).unwrap_or(""));
            Err(ParseError {
                line,
                column,
                message: "invalid UTF-8".to_string(),
            })
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// Number text as written (`-0.5`, `1.3`, `64`).
    Number(String),
    Str(String),
    Punct(char),
    Arrow,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Number(s) => write!(f, "number `{s}`"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Punct(c) => write!(f, "`{c}`"),
            Tok::Arrow => write!(f, "`->`"),
        }
    }
}

struct Token {
    tok: Tok,
    line: usize,
    column: usize,
}

fn end_position(text: &str) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for c in text.chars() {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut column) = (0usize, 1usize, 1usize);
    let err = |line, column, message: String| ParseError {
        line,
        column,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let (tl, tc) = (line, column);
        if c == '\n' {
            i += 1;
            line += 1;
            column = 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            column += 1;
            continue;
        }
        let start = i;
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c == '-' && chars.get(i + 1) == Some(&'>') {
            i += 2;
            Tok::Arrow
        } else if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' {
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                let exp_sign = (d == '-' || d == '+') && matches!(chars[i - 1], 'e' | 'E');
                if d.is_ascii_digit() || d == '.' || d == 'e' || d == 'E' || exp_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            Tok::Number(chars[start..i].iter().collect())
        } else if c == '"' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err(err(tl, tc, "unterminated string literal".to_string()));
                };
                i += 1;
                match d {
                    '"' => break,
                    '\\' => {
                        let e = chars.get(i).copied();
                        i += 1;
                        s.push(match e {
                            Some('"') => '"',
                            Some('\\') => '\\',
                            Some('n') => '\n',
                            Some('t') => '\t',
                            Some('r') => '\r',
                            _ => return Err(err(
                                tl,
                                tc,
                                "unknown escape in string literal (expected \\\" \\\\ \\n \\t \\r)"
                                    .to_string(),
                            )),
                        });
                    }
                    d => s.push(d),
                }
            }
            Tok::Str(s)
        } else if "()[]{}<>,=;".contains(c) {
            i += 1;
            Tok::Punct(c)
        } else {
            return Err(err(tl, tc, format!("unexpected character {c:?}")));
        };
        // Advance the column over what was consumed (strings may contain newlines).
        for &d in &chars[start..i] {
            if d == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        tokens.push(Token {
            tok,
            line: tl,
            column: tc,
        });
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end: (usize, usize),
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.tokens.get(self.pos + k).map(|t| &t.tok)
    }

    fn error(&self, expected: &str) -> ParseError {
        match self.tokens.get(self.pos) {
            Some(t) => ParseError {
                line: t.line,
                column: t.column,
                message: format!("expected {expected}, found {}", t.tok),
            },
            None => ParseError {
                line: self.end.0,
                column: self.end.1,
                message: format!("expected {expected}, found end of input"),
            },
        }
    }

    fn error_here(&self, message: String) -> ParseError {
        let (line, column) = match self.tokens.get(self.pos) {
            Some(t) => (t.line, t.column),
            None => self.end,
        };
        ParseError {
            line,
            column,
            message,
        }
    }

    fn error_prev(&self, message: String) -> ParseError {
        let (line, column) = match self.pos.checked_sub(1).and_then(|p| self.tokens.get(p)) {
            Some(t) => (t.line, t.column),
            None => self.end,
        };
        ParseError {
            line,
            column,
            message,
        }
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn punct(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(self.error(&format!("`{c}`")))
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, ParseError> {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.error(what)),
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<(), ParseError> {
        match self.peek() {
            Some(Tok::Ident(s)) if s == kw => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.error(&format!("`{kw}`"))),
        }
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == kw)
    }

    fn string(&mut self, what: &str) -> Result<String, ParseError> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.error(what)),
        }
    }

    fn number(&mut self, what: &str) -> Result<String, ParseError> {
        match self.peek() {
            Some(Tok::Number(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.error(what)),
        }
    }

    /// Parse `item (',' item)*` up to (not including) the closing punctuation `close`.
    fn comma_list<T>(
        &mut self,
        close: char,
        mut item: impl FnMut(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        let mut out = Vec::new();
        if self.is_punct(close) {
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if !self.eat_punct(',') {
                break;
            }
        }
        if !self.is_punct(close) {
            return Err(self.error(&format!("`,` or `{close}`")));
        }
        Ok(out)
    }

    fn program(&mut self) -> Result<Program, ParseError> {
        self.keyword("program")?;
        self.punct('(')?;
        let version = self.number("program version (e.g. `1.3`)")?;
        if !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(self.error_prev(format!(
                "invalid program version `{version}` (expected digits and dots, e.g. `1.3`)"
            )));
        }
        self.punct(')')?;
        let mut build_info = Vec::new();
        if self.eat_punct('[') {
            build_info = self.build_info()?;
            self.punct(']')?;
        }
        self.punct('{')?;
        let mut functions = Vec::new();
        while self.is_keyword("func") {
            functions.push(self.function()?);
        }
        self.punct('}')?;
        if self.pos < self.tokens.len() {
            return Err(self.error("end of input after the program's closing `}`"));
        }
        Ok(Program {
            version,
            build_info,
            functions,
        })
    }

    fn build_info(&mut self) -> Result<Vec<(String, String)>, ParseError> {
        self.keyword("buildInfo")?;
        self.punct('=')?;
        self.keyword("dict")?;
        self.punct('<')?;
        self.keyword("string")?;
        self.punct(',')?;
        self.keyword("string")?;
        self.punct('>')?;
        self.punct('(')?;
        self.punct('{')?;
        let pairs = self.comma_list('}', |p| {
            p.punct('{')?;
            let k = p.string("buildInfo key string")?;
            p.punct(',')?;
            let v = p.string("buildInfo value string")?;
            p.punct('}')?;
            Ok((k, v))
        })?;
        self.punct('}')?;
        self.punct(')')?;
        Ok(pairs)
    }

    fn function(&mut self) -> Result<Function, ParseError> {
        self.keyword("func")?;
        let name = self.ident("function name")?;
        self.punct('<')?;
        let opset = self.ident("opset (e.g. `ios18`)")?;
        self.punct('>')?;
        self.punct('(')?;
        let inputs = self.comma_list(')', |p| {
            if !p.is_keyword("tensor") {
                return Err(p.error("input type `tensor<...>`"));
            }
            let ty = p.tensor_type()?;
            let name = p.ident("input name")?;
            Ok((name, ty))
        })?;
        self.punct(')')?;
        self.punct('{')?;
        let mut body = Vec::new();
        while !self.is_punct('}') {
            if self.peek().is_none() {
                return Err(self.error("statement or `}`"));
            }
            body.push(self.statement()?);
        }
        self.punct('}')?;
        if self.peek() != Some(&Tok::Arrow) {
            return Err(self.error("`->`"));
        }
        self.pos += 1;
        self.punct('(')?;
        let outputs = self.comma_list(')', |p| p.ident("output name"))?;
        self.punct(')')?;
        self.punct(';')?;
        Ok(Function {
            name,
            opset,
            inputs,
            body,
            outputs,
        })
    }

    fn dtype(&mut self) -> Result<DType, ParseError> {
        match self.peek() {
            Some(Tok::Ident(s)) => match DType::from_name(s) {
                Some(d) => {
                    self.pos += 1;
                    Ok(d)
                }
                None => Err(self.error("dtype (fp16, fp32, int32, bool, string, ...)")),
            },
            _ => Err(self.error("dtype (fp16, fp32, int32, bool, string, ...)")),
        }
    }

    fn tensor_type(&mut self) -> Result<TensorType, ParseError> {
        self.keyword("tensor")?;
        self.punct('<')?;
        let dtype = self.dtype()?;
        self.punct(',')?;
        self.punct('[')?;
        let shape = self.comma_list(']', |p| {
            let text = p.number("dimension")?;
            match text.parse::<usize>() {
                Ok(d) if d <= MAX_DIM => Ok(d),
                _ => Err(p.error_prev(format!(
                    "invalid dimension `{text}` (dimensions are integers ≤ {MAX_DIM})"
                ))),
            }
        })?;
        self.punct(']')?;
        self.punct('>')?;
        if shape.len() > MAX_RANK {
            return Err(self.error_prev(format!(
                "tensor rank {} exceeds the maximum rank {MAX_RANK}",
                shape.len()
            )));
        }
        Ok(TensorType { dtype, shape })
    }

    fn value_type(&mut self) -> Result<ValueType, ParseError> {
        if self.is_keyword("tensor") {
            Ok(ValueType::Tensor(self.tensor_type()?))
        } else if matches!(self.peek(), Some(Tok::Ident(s)) if DType::from_name(s).is_some()) {
            Ok(ValueType::Scalar(self.dtype()?))
        } else {
            Err(self.error("type (`tensor<...>` or a scalar dtype)"))
        }
    }

    fn statement(&mut self) -> Result<Statement, ParseError> {
        let out_type = self.value_type()?;
        let out_name = self.ident("result name")?;
        self.punct('=')?;
        let op = self.ident("op name")?;
        self.punct('(')?;
        let args = self.comma_list(')', |p| {
            let key = p.ident("argument name")?;
            p.punct('=')?;
            let arg = p.arg(0)?;
            Ok((key, arg))
        })?;
        self.punct(')')?;
        let mut op_name = None;
        let mut attrs = Vec::new();
        if self.eat_punct('[') {
            let list = self.comma_list(']', |p| {
                let key = p.ident("attribute name")?;
                p.punct('=')?;
                let lit = p.literal()?;
                Ok((key, lit))
            })?;
            self.punct(']')?;
            for (key, lit) in list {
                match (key.as_str(), lit) {
                    ("name", Literal::Str(s)) if op_name.is_none() => op_name = Some(s),
                    ("name", _) => {
                        return Err(self.error_prev(
                            "attribute `name` must be a single string(\"...\")".to_string(),
                        ))
                    }
                    (_, lit) => attrs.push((key, lit)),
                }
            }
        }
        self.punct(';')?;
        Ok(Statement {
            op_name: op_name.unwrap_or_else(|| out_name.clone()),
            out_name,
            out_type,
            op,
            args,
            attrs,
        })
    }

    fn starts_literal(&self) -> bool {
        match self.peek() {
            Some(Tok::Ident(s)) if s == "tensor" => self.peek_at(1) == Some(&Tok::Punct('<')),
            Some(Tok::Ident(s)) => {
                DType::from_name(s).is_some() && self.peek_at(1) == Some(&Tok::Punct('('))
            }
            _ => false,
        }
    }

    fn arg(&mut self, depth: usize) -> Result<Arg, ParseError> {
        if self.starts_literal() {
            return Ok(Arg::Literal(self.literal()?));
        }
        if self.is_punct('(') {
            if depth >= MAX_ARG_NESTING {
                return Err(self.error_here(format!(
                    "argument tuples nested deeper than {MAX_ARG_NESTING}"
                )));
            }
            self.pos += 1;
            let items = self.comma_list(')', |p| p.arg(depth + 1))?;
            self.punct(')')?;
            return Ok(Arg::List(items));
        }
        Ok(Arg::Var(
            self.ident("argument value (name, literal or tuple)")?,
        ))
    }

    fn literal(&mut self) -> Result<Literal, ParseError> {
        if self.is_keyword("tensor") {
            let ty = self.tensor_type()?;
            self.punct('(')?;
            let lit = if self.is_keyword("BLOBFILE") {
                let blob = self.blobfile()?;
                Literal::Blob { ty, blob }
            } else {
                let data = self.tensor_data(ty.dtype)?;
                if Some(data.len()) != ty.num_elements() {
                    return Err(self.error_prev(format!(
                        "tensor literal has {} elements but its type {} needs {}",
                        data.len(),
                        ty,
                        ty.num_elements()
                            .map_or("an overflowing count".to_string(), |n| n.to_string())
                    )));
                }
                Literal::Tensor { ty, data }
            };
            self.punct(')')?;
            return Ok(lit);
        }
        let dtype = match self.peek() {
            Some(Tok::Ident(s)) if DType::from_name(s).is_some() => self.dtype()?,
            _ => {
                return Err(
                    self.error("literal (e.g. `int32(1)`, `string(\"x\")`, `tensor<...>(...)`)")
                )
            }
        };
        self.punct('(')?;
        let lit = self.scalar(dtype)?;
        self.punct(')')?;
        Ok(lit)
    }

    fn scalar(&mut self, dtype: DType) -> Result<Literal, ParseError> {
        match dtype {
            DType::Bool => Ok(Literal::Bool(self.bool_value()?)),
            DType::String => Ok(Literal::Str(self.string("string")?)),
            d if d.is_float() => {
                let text = self.number("float")?;
                let value = self.float_value(&text)?;
                Ok(Literal::Float {
                    dtype: d,
                    value,
                    decimals: decimals_of(&text, value),
                })
            }
            d => {
                let text = self.number("integer")?;
                Ok(Literal::Int {
                    dtype: d,
                    value: self.int_value(&text, d)?,
                })
            }
        }
    }

    fn bool_value(&mut self) -> Result<bool, ParseError> {
        match self.peek() {
            Some(Tok::Ident(s)) if s == "true" => {
                self.pos += 1;
                Ok(true)
            }
            Some(Tok::Ident(s)) if s == "false" => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.error("`true` or `false`")),
        }
    }

    fn float_value(&self, text: &str) -> Result<f64, ParseError> {
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(self.error_prev(format!("invalid or non-finite float `{text}`"))),
        }
    }

    fn int_value(&self, text: &str, dtype: DType) -> Result<i64, ParseError> {
        let v = text
            .parse::<i64>()
            .map_err(|_| self.error_prev(format!("invalid integer `{text}`")))?;
        match dtype.int_range() {
            Some((lo, hi)) if v >= lo && v <= hi => Ok(v),
            _ => Err(self.error_prev(format!("integer {v} out of range for {dtype}"))),
        }
    }

    fn tensor_data(&mut self, dtype: DType) -> Result<TensorData, ParseError> {
        self.punct('[')?;
        let data = match dtype {
            DType::Bool => TensorData::Bool(self.comma_list(']', |p| p.bool_value())?),
            DType::String => TensorData::Str(self.comma_list(']', |p| p.string("string"))?),
            d if d.is_float() => TensorData::Float(self.comma_list(']', |p| {
                let text = p.number("float")?;
                p.float_value(&text)
            })?),
            d => TensorData::Int(self.comma_list(']', |p| {
                let text = p.number("integer")?;
                p.int_value(&text, d)
            })?),
        };
        self.punct(']')?;
        Ok(data)
    }

    fn blobfile(&mut self) -> Result<BlobRef, ParseError> {
        self.keyword("BLOBFILE")?;
        self.punct('(')?;
        self.keyword("path")?;
        self.punct('=')?;
        self.keyword("string")?;
        self.punct('(')?;
        let path = self.string("blob path string")?;
        self.punct(')')?;
        self.punct(',')?;
        self.keyword("offset")?;
        self.punct('=')?;
        self.keyword("uint64")?;
        self.punct('(')?;
        let text = self.number("blob offset")?;
        let offset = text
            .parse::<u64>()
            .map_err(|_| self.error_prev(format!("invalid blob offset `{text}`")))?;
        self.punct(')')?;
        self.punct(')')?;
        Ok(BlobRef { path, offset })
    }
}

/// If `text` is a plain decimal (`0.125000`) that C `%.Nf` would print exactly for `value`
/// but the shortest form (`0.125`) would not, return N so the printer can reproduce it.
fn decimals_of(text: &str, value: f64) -> Option<u8> {
    let (_, frac) = text.split_once('.')?;
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = u8::try_from(frac.len()).ok()?;
    // Canonical form: `None` whenever the shortest text already reproduces `text`.
    (format!("{:.*}", n as usize, value) == text && crate::printer::float_text(value, None) != text)
        .then_some(n)
}
