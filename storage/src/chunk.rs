//! XOR chunks: the head's compact in-memory sample encoding.
//!
//! The scheme is Gorilla's (Pelkonen et al., VLDB 2015), as Prometheus uses it:
//! timestamps as delta-of-delta in variable-width buckets, values XORed with
//! the previous value, writing only the bits that changed. Regular scrapes cost
//! one bit of timestamp and a few bits of value per sample, so a sample takes
//! about 1–2 bytes instead of 16.

use tidewatch_model::{Sample, TimestampMs};

/// A growable bit buffer, most significant bit first.
#[derive(Debug, Default, Clone)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = the last byte is full or there is none).
    used: u8,
}

impl BitWriter {
    fn write_bit(&mut self, bit: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if bit {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 0x80 >> self.used;
        }
        self.used = (self.used + 1) % 8;
    }

    /// Writes the low `count` bits of `value`, high bit first.
    fn write_bits(&mut self, value: u64, count: u8) {
        let mut remaining = count;
        while remaining > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - self.used;
            let take = free.min(remaining);
            let shift = remaining - take;
            let chunk = ((value >> shift) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (free - take);
            self.used = (self.used + take) % 8;
            remaining -= take;
        }
    }
}

/// Reads bits written by [`BitWriter`]; `None` past the end. Bits come out
/// of a 64-bit buffer refilled a byte at a time, so most reads are a shift.
#[derive(Debug, Clone)]
struct BitReader<'a> {
    bytes: &'a [u8],
    /// The next byte to load into the buffer.
    next: usize,
    /// Unread bits, left-aligned.
    buffer: u64,
    /// How many bits of `buffer` are unread.
    valid: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader {
            bytes,
            next: 0,
            buffer: 0,
            valid: 0,
        }
    }

    fn refill(&mut self) {
        // Fast path: load eight bytes at once and keep the whole ones that
        // fit. The bits of a byte that only partly fits are its true bits, so
        // loading that byte again later ORs the same bits into place.
        if let Some(word) = self.bytes.get(self.next..self.next + 8) {
            let word = u64::from_be_bytes(word.try_into().unwrap_or([0; 8]));
            self.buffer |= word >> self.valid;
            let whole = (64 - self.valid) / 8;
            self.next += whole as usize;
            self.valid += whole * 8;
            return;
        }
        while self.valid <= 56 {
            let Some(&byte) = self.bytes.get(self.next) else {
                return;
            };
            self.buffer |= u64::from(byte) << (56 - self.valid);
            self.valid += 8;
            self.next += 1;
        }
    }

    #[inline]
    fn read_bit(&mut self) -> Option<bool> {
        self.read_bits(1).map(|bit| bit == 1)
    }

    #[inline]
    fn read_bits(&mut self, count: u8) -> Option<u64> {
        let count = u32::from(count);
        if count > 56 {
            // More than a refill guarantees: in two parts.
            let high = self.read_bits((count - 32) as u8)?;
            let low = self.read_bits(32)?;
            return Some((high << 32) | low);
        }
        if count == 0 {
            return Some(0);
        }
        if self.valid < count {
            self.refill();
            if self.valid < count {
                return None;
            }
        }
        let value = self.buffer >> (64 - count);
        self.buffer <<= count;
        self.valid -= count;
        Some(value)
    }
}

/// Delta-of-delta buckets: (prefix bits, prefix length, payload bits).
const DOD_BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

/// Whether `value` survives as a `bits`-wide two's complement payload.
fn fits(value: i64, bits: u8) -> bool {
    let limit = 1i64 << (bits - 1);
    -limit <= value && value < limit
}

/// An append-only XOR chunk. Samples must be appended in strictly increasing time.
#[derive(Debug, Default, Clone)]
pub(crate) struct XorChunk {
    bits: BitWriter,
    count: u32,
    first_time: TimestampMs,
    last_time: TimestampMs,
    last_delta: i64,
    last_value: u64,
    leading: u8,
    trailing: u8,
}

impl XorChunk {
    pub(crate) fn len(&self) -> usize {
        self.count as usize
    }

    pub(crate) fn first_time(&self) -> Option<TimestampMs> {
        (self.count > 0).then_some(self.first_time)
    }

    pub(crate) fn last_time(&self) -> Option<TimestampMs> {
        (self.count > 0).then_some(self.last_time)
    }

    /// The newest sample, kept beside the bits for appending: reading it
    /// decodes nothing.
    pub(crate) fn last_sample(&self) -> Option<Sample> {
        (self.count > 0).then(|| Sample::new(self.last_time, f64::from_bits(self.last_value)))
    }

    /// Bytes of encoded data held.
    pub(crate) fn byte_len(&self) -> usize {
        self.bits.bytes.len()
    }

    /// Releases spare capacity once the chunk is full.
    pub(crate) fn shrink(&mut self) {
        self.bits.bytes.shrink_to_fit();
    }

    pub(crate) fn append(&mut self, sample: Sample) {
        debug_assert!(self.count == 0 || sample.timestamp > self.last_time);
        let value = sample.value.to_bits();
        match self.count {
            0 => {
                self.bits.write_bits(sample.timestamp as u64, 64);
                self.bits.write_bits(value, 64);
                self.first_time = sample.timestamp;
            }
            1 => {
                let delta = sample.timestamp.wrapping_sub(self.last_time);
                self.bits.write_bits(delta as u64, 64);
                self.write_value(value);
                self.last_delta = delta;
            }
            _ => {
                let delta = sample.timestamp.wrapping_sub(self.last_time);
                let dod = delta.wrapping_sub(self.last_delta);
                if dod == 0 {
                    self.bits.write_bit(false);
                } else if let Some(&(prefix, prefix_len, payload)) = DOD_BUCKETS.iter().find(|b| fits(dod, b.2)) {
                    self.bits.write_bits(prefix, prefix_len);
                    self.bits.write_bits(dod as u64, payload);
                } else {
                    self.bits.write_bits(0b1111, 4);
                    self.bits.write_bits(dod as u64, 64);
                }
                self.write_value(value);
                self.last_delta = delta;
            }
        }
        self.last_time = sample.timestamp;
        self.last_value = value;
        self.count += 1;
    }

    fn write_value(&mut self, value: u64) {
        let xor = value ^ self.last_value;
        if xor == 0 {
            self.bits.write_bit(false);
            return;
        }
        self.bits.write_bit(true);
        let mut leading = xor.leading_zeros() as u8;
        let trailing = xor.trailing_zeros() as u8;
        // 5 bits hold the leading count.
        leading = leading.min(31);
        if self.count > 1 && leading >= self.leading && trailing >= self.trailing && self.leading + self.trailing > 0 {
            // Reuse the previous window.
            self.bits.write_bit(false);
            let significant = 64 - self.leading - self.trailing;
            self.bits.write_bits(xor >> self.trailing, significant);
            return;
        }
        self.bits.write_bit(true);
        let significant = 64 - leading - trailing;
        self.bits.write_bits(u64::from(leading), 5);
        // 64 significant bits are written as 0 in 6 bits.
        self.bits.write_bits(u64::from(significant % 64), 6);
        self.bits.write_bits(xor >> trailing, significant);
        self.leading = leading;
        self.trailing = trailing;
    }

    pub(crate) fn iter(&self) -> XorIter<'_> {
        XorIter {
            reader: BitReader::new(&self.bits.bytes),
            remaining: self.count,
            read: 0,
            time: 0,
            delta: 0,
            value: 0,
            leading: 0,
            trailing: 0,
        }
    }
}

/// Decodes a chunk's samples in order.
#[derive(Debug, Clone)]
pub(crate) struct XorIter<'a> {
    reader: BitReader<'a>,
    remaining: u32,
    read: u32,
    time: TimestampMs,
    delta: i64,
    value: u64,
    leading: u8,
    trailing: u8,
}

impl XorIter<'_> {
    #[inline]
    fn read_value(&mut self) -> Option<()> {
        if !self.reader.read_bit()? {
            return Some(());
        }
        if self.reader.read_bit()? {
            self.leading = self.reader.read_bits(5)? as u8;
            let mut significant = self.reader.read_bits(6)? as u8;
            if significant == 0 {
                significant = 64;
            }
            self.trailing = 64u8.checked_sub(self.leading + significant)?;
        }
        let significant = 64 - self.leading - self.trailing;
        let bits = self.reader.read_bits(significant)?;
        self.value ^= bits << self.trailing;
        Some(())
    }

    fn decode_next(&mut self) -> Option<Sample> {
        match self.read {
            0 => {
                self.time = self.reader.read_bits(64)? as i64;
                self.value = self.reader.read_bits(64)?;
            }
            1 => {
                self.delta = self.reader.read_bits(64)? as i64;
                self.time = self.time.wrapping_add(self.delta);
                self.read_value()?;
            }
            _ => {
                let mut dod = 0i64;
                if self.reader.read_bit()? {
                    let mut bucket = None;
                    for &(_, prefix_len, payload) in &DOD_BUCKETS {
                        // Prefixes are unary: each further 1 bit selects the next bucket.
                        if !self.reader.read_bit()? {
                            bucket = Some((prefix_len, payload));
                            break;
                        }
                    }
                    let payload = bucket.map_or(64, |(_, payload)| payload);
                    let raw = self.reader.read_bits(payload)?;
                    // Sign-extend the payload.
                    let shift = 64 - u32::from(payload);
                    dod = ((raw << shift) as i64) >> shift;
                }
                self.delta = self.delta.wrapping_add(dod);
                self.time = self.time.wrapping_add(self.delta);
                self.read_value()?;
            }
        }
        self.read += 1;
        Some(Sample::new(self.time, f64::from_bits(self.value)))
    }
}

impl Iterator for XorIter<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        self.decode_next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Whatever is appended comes back bit for bit, for any gaps and any values.
        #[test]
        fn round_trips(
            start in any::<i64>().prop_map(|t| t / 4),
            gaps in proptest::collection::vec(prop_oneof![Just(15_000i64), 1i64..100, 1i64..(1 << 40)], 0..200),
            values in proptest::collection::vec(prop_oneof![any::<u64>(), (0u64..1000).prop_map(|v| (v as f64).to_bits()), Just(f64::NAN.to_bits())], 201),
        ) {
            let mut chunk = XorChunk::default();
            let mut expected = Vec::new();
            let mut t = start;
            for (i, gap) in std::iter::once(0).chain(gaps).enumerate() {
                t = t.saturating_add(gap);
                if expected.last().is_some_and(|s: &Sample| s.timestamp >= t) {
                    break;
                }
                let sample = Sample::new(t, f64::from_bits(values[i]));
                chunk.append(sample);
                expected.push(sample);
            }
            let decoded: Vec<Sample> = chunk.iter().collect();
            prop_assert_eq!(decoded.len(), expected.len());
            for (d, e) in decoded.iter().zip(&expected) {
                prop_assert!(d.same_as(e), "{:?} != {:?}", d, e);
            }
        }
    }

    #[test]
    fn regular_scrapes_are_compact() {
        let mut chunk = XorChunk::default();
        let mut value = 1000.0;
        for i in 0..120 {
            value += (i % 7) as f64;
            chunk.append(Sample::new(1_700_000_000_000 + i * 15_000, value));
        }
        let bytes_per_sample = chunk.byte_len() as f64 / 120.0;
        assert!(bytes_per_sample < 2.5, "{bytes_per_sample} bytes per sample");
    }
}
