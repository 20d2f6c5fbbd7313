//! Float samples with Prometheus' semantics.

use crate::time::TimestampMs;

/// The bit pattern Prometheus uses to mark a series stale. It is a NaN, but a
/// specific one: ordinary NaN values are data, this one is a marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as an `f64`.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `value` is the staleness marker (not merely any NaN).
pub fn is_stale_nan(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// One float sample. Values are compared bit for bit where identity matters
/// (deduplication), so NaN payloads survive storage unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub timestamp: TimestampMs,
    pub value: f64,
}

impl Sample {
    pub fn new(timestamp: TimestampMs, value: f64) -> Self {
        Sample { timestamp, value }
    }

    /// Bitwise equality, which treats two identical NaNs as equal.
    pub fn same_as(&self, other: &Sample) -> bool {
        self.timestamp == other.timestamp && self.value.to_bits() == other.value.to_bits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_marker_is_a_specific_nan() {
        assert!(stale_nan().is_nan());
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
    }
}
