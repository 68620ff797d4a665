//! Learning rate: linear warmup from 0, then cosine decay to `min_lr` at the last step.
use serde::{Deserialize, Serialize};

/// Warmup-then-cosine schedule, a pure function of the step (so resuming is exact).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warmup.
    pub warmup_steps: usize,
    /// Total steps.
    pub total_steps: usize,
    /// Learning rate at the end.
    pub min_lr: f64,
}

impl LrSchedule {
    /// Learning rate of step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        self.min_lr
            + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::LrSchedule;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule {
            lr: 1.0,
            warmup_steps: 4,
            total_steps: 14,
            min_lr: 0.0,
        };
        assert_eq!(s.at(0), 0.25);
        assert_eq!(s.at(3), 1.0);
        assert_eq!(s.at(4), 1.0);
        assert!((s.at(9) - 0.5).abs() < 1e-12);
        assert!(s.at(14).abs() < 1e-12);
        assert!(s.at(100).abs() < 1e-12);
    }
}
