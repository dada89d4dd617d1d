//! Progress bars on stderr for long steps (hidden automatically when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

#[derive(Default)]
pub struct Bars {
    bar: Option<ProgressBar>,
}

impl model::cache::Progress for Bars {
    fn start(&mut self, message: &str, total: Option<u64>) {
        let bar = match total {
            Some(n) => {
                let b = ProgressBar::new(n);
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b
            }
            None => {
                let b = ProgressBar::new_spinner();
                b.enable_steady_tick(Duration::from_millis(120));
                b
            }
        };
        bar.set_message(message.to_string());
        self.bar = Some(bar);
    }
    fn advance(&mut self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// A bar counting `total` steps of `unit` (e.g. windows) on stderr, with an ETA.
pub fn counter(message: &str, total: u64, unit: &str) -> ProgressBar {
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{elapsed}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b.set_message(message.to_string());
    b
}
