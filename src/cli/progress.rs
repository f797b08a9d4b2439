//! Progress reporting: indicatif bars on a terminal, one line per epoch otherwise.

use hepflow::flow::Flow;
use hepflow::train::{EpochEnd, TrainObserver};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// True when stderr is a terminal (bars are drawn only then).
pub fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// A bar for `total` items, hidden when not on a terminal.
pub fn bar(total: u64, msg: &str) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30.cyan/blue}] {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Training observer: a bar per epoch with the running loss, then a summary line.
pub struct TrainProgress {
    label: String,
    pb: Option<ProgressBar>,
    /// Abort after this epoch (simulated interruption).
    pub stop_after: Option<usize>,
}

impl TrainProgress {
    /// A new observer; `label` prefixes every line (e.g. "background").
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_string(),
            pb: None,
            stop_after: None,
        }
    }
}

impl TrainObserver for TrainProgress {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize, loss: f64) {
        if !interactive() {
            return;
        }
        let pb = self.pb.get_or_insert_with(|| {
            let pb = ProgressBar::new(steps as u64);
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:25.cyan/blue}] {pos}/{len} {msg} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            pb
        });
        pb.set_prefix(format!("{} epoch {epoch}", self.label));
        pb.set_position(step as u64);
        if step.is_multiple_of(10) || step == steps {
            pb.set_message(format!("loss {loss:.4}"));
        }
    }

    fn on_rollback(&mut self, epoch: usize, new_lr: f64) {
        eprintln!(
            "{}: epoch {epoch}: non-finite loss or gradient; rolled back to the last good state, learning rate now {new_lr:.2e}",
            self.label
        );
    }

    fn on_epoch_end(&mut self, _flow: &Flow<f32>, end: &EpochEnd<'_>) -> Result<(), String> {
        if let Some(pb) = self.pb.take() {
            pb.finish_and_clear();
        }
        let r = end.record;
        let best = if end.state.best_epoch == r.epoch {
            " *"
        } else {
            ""
        };
        eprintln!(
            "{} epoch {:>3}: train {:.4}  val {:.4} (model space)  lr {:.2e}  {:.0} ev/s  {:.1}s{best}",
            self.label, r.epoch, r.train_nll, r.val_nll, r.lr, r.events_per_second, r.seconds
        );
        if self.stop_after == Some(r.epoch) {
            return Err(format!(
                "stopped after epoch {} as requested (--stop-after); continue with --resume",
                r.epoch
            ));
        }
        Ok(())
    }
}
