//! Print the validator's findings for MIL files: `cargo run -p mil --example validate_fixtures -- FILE...`.
fn main() {
    for path in std::env::args().skip(1) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        match mil::parse(&text) {
            Ok(p) => {
                for d in mil::validate(&p, &mil::ValidateOptions::default()) {
                    println!("{path}: {d}");
                }
            }
            Err(e) => println!("{path}:{e}"),
        }
    }
}
