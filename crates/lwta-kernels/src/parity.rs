//! The one shape of a parity check, shared by every crate that compares against reference fixtures,
//! so `cargo xtask parity` prints them all the same way.

/// One comparison against a reference: `max_rel_err` is the worst relative error found.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub max_rel_err: f64,
    pub tolerance: f64,
    pub passed: bool,
    /// Anything a reader needs beyond the error (e.g. mismatched winners, near-ties).
    pub detail: String,
}

impl Check {
    /// A check that passes when `max_rel_err <= tolerance` (NaN never passes).
    pub fn within(name: impl Into<String>, max_rel_err: f64, tolerance: f64) -> Self {
        Self { name: name.into(), max_rel_err, tolerance, passed: max_rel_err <= tolerance, detail: String::new() }
    }

    /// Adds a detail and, when `ok` is false, fails the check.
    pub fn require(mut self, ok: bool, detail: impl Into<String>) -> Self {
        self.passed &= ok;
        let detail = detail.into();
        if !detail.is_empty() {
            if !self.detail.is_empty() {
                self.detail.push_str("; ");
            }
            self.detail.push_str(&detail);
        }
        self
    }
}

/// Largest `|a - b| / max(|b|, floor)` over two equally long sequences; `floor` keeps near-zero
/// references from turning rounding noise into huge relative errors.
pub fn max_rel_err(actual: impl IntoIterator<Item = f64>, expected: impl IntoIterator<Item = f64>, floor: f64) -> f64 {
    actual
        .into_iter()
        .zip(expected)
        .map(|(a, b)| {
            let e = (a - b).abs() / b.abs().max(floor);
            if e.is_nan() {
                f64::INFINITY
            } else {
                e
            }
        })
        .fold(0.0, f64::max)
}
