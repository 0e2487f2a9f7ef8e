//! Floating-point semantics: IEEE results in every rounding direction for f16, bf16, f32 and f64,
//! `.ftz`, `.sat`, PTX's min/max NaN rules, conversions, and the approximate instructions.
//!
//! Every operation first computes its exact result as the nearest f64 plus the sign of what that
//! rounding dropped (error-free transformations: TwoSum, TwoProduct, exact remainders), then
//! rounds that once into the target format in the requested direction ([`round_f64`]).

use std::cmp::Ordering;

use crate::inst::{ApproxOp, CvtTy, FloatOp, Fmt, Rnd, TestpOp};

/// The NaN NVIDIA GPUs produce (all ones but the sign), per format.
pub(crate) fn canonical_nan(fmt: Fmt) -> u64 {
    match fmt {
        Fmt::F16 | Fmt::BF16 => 0x7FFF,
        Fmt::F32 => 0x7FFF_FFFF,
        Fmt::F64 => 0x7FFF_FFFF_FFFF_FFFF,
    }
}

/// (fraction bits, exponent bits)
fn layout(fmt: Fmt) -> (u32, u32) {
    match fmt {
        Fmt::F16 => (10, 5),
        Fmt::BF16 => (7, 8),
        Fmt::F32 => (23, 8),
        Fmt::F64 => (52, 11),
    }
}

/// The value of `bits` in `fmt` (exact).
pub(crate) fn to_f64(bits: u64, fmt: Fmt) -> f64 {
    match fmt {
        Fmt::F64 => f64::from_bits(bits),
        Fmt::F32 => f64::from(f32::from_bits(bits as u32)),
        Fmt::BF16 => f64::from(f32::from_bits((bits as u32 & 0xFFFF) << 16)),
        Fmt::F16 => {
            let (sign, exp, frac) = ((bits >> 15) & 1, (bits >> 10) & 0x1F, bits & 0x3FF);
            let magnitude = match exp {
                0 => frac as f64 * 2f64.powi(-24),
                0x1F if frac == 0 => f64::INFINITY,
                0x1F => f64::NAN,
                _ => (frac | 0x400) as f64 * 2f64.powi(exp as i32 - 25),
            };
            if sign == 1 {
                -magnitude
            } else {
                magnitude
            }
        }
    }
}

/// Rounds `value + ε` into `fmt` in direction `rnd`, where ε is an infinitesimal of sign `err`
/// (the part of the exact result below `value`'s last bit). Returns the bits.
///
/// The exact result lies strictly between `value` and its f64 neighbour on the `err` side, and
/// that open interval holds no value or midpoint of a narrower format; so rounding `value` with
/// a sticky quarter-ulp in the `err` direction rounds the exact result.
pub(crate) fn round_f64(value: f64, err: Ordering, rnd: Rnd, fmt: Fmt) -> u64 {
    let (frac_bits, exp_bits) = layout(fmt);
    let sign_bit = if value.is_sign_negative() { 1u64 << (frac_bits + exp_bits) } else { 0 };
    let inf = ((1u64 << exp_bits) - 1) << frac_bits;
    if value.is_nan() {
        return canonical_nan(fmt);
    }
    if value.is_infinite() {
        return sign_bit | inf;
    }
    if value == 0.0 && err == Ordering::Equal {
        return sign_bit;
    }
    let negative = sign_bit != 0;
    let bits = value.to_bits();
    let (raw_exp, frac) = (((bits >> 52) & 0x7FF) as i32, bits & ((1 << 52) - 1));
    let (m, e) = if raw_exp == 0 { (frac, -1074) } else { (frac | 1 << 52, raw_exp - 1075) };
    // two extra bits, the lower one sticky in the direction of the magnitude's error
    let magnitude_err = if negative { err.reverse() } else { err };
    let m4 = match magnitude_err {
        Ordering::Greater => (u128::from(m) << 2) + 1,
        Ordering::Less => (u128::from(m) << 2) - 1,
        Ordering::Equal => u128::from(m) << 2,
    };
    let e4 = e - 2;
    let bias = (1i32 << (exp_bits - 1)) - 1;
    let top = 127 - m4.leading_zeros() as i32 + e4; // floor(log2(magnitude))
    let quantum = top.max(1 - bias) - frac_bits as i32;
    let shift = (quantum - e4) as u32; // >= 2: every target is coarser than f64 + 2 bits
    let (mut kept, rem, half) = if shift >= 128 { (0, 1, u128::MAX) } else { (m4 >> shift, m4 & ((1 << shift) - 1), 1u128 << (shift - 1)) };
    let up = match rnd {
        Rnd::Nearest => rem > half || (rem == half && kept & 1 == 1),
        Rnd::Zero => false,
        Rnd::Up => !negative && rem != 0,
        Rnd::Down => negative && rem != 0,
    };
    kept += up as u128;
    // biased exponent - 1, shifted, plus the significand: also right for subnormals and for a
    // significand that rounded up into the next binade
    let encoded = (((quantum + frac_bits as i32 + bias - 1) as u128) << frac_bits) + kept;
    let magnitude = if encoded >= u128::from(inf) {
        let to_infinity = match rnd {
            Rnd::Nearest => true,
            Rnd::Zero => false,
            Rnd::Up => !negative,
            Rnd::Down => negative,
        };
        if to_infinity {
            inf
        } else {
            inf - 1
        }
    } else {
        encoded as u64
    };
    sign_bit | magnitude
}

fn sign_of(x: f64) -> Ordering {
    x.partial_cmp(&0.0).unwrap_or(Ordering::Equal)
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// The sign of an exact sum of f64 terms (Shewchuk's expansion sum: the nonoverlapping
/// components' largest nonzero one has the sum's sign).
fn sum_sign(terms: &[f64]) -> Ordering {
    let mut expansion: Vec<f64> = Vec::with_capacity(terms.len() * 2);
    for &term in terms {
        let mut q = term;
        let mut grown = Vec::with_capacity(expansion.len() + 1);
        for &component in &expansion {
            let (s, e) = two_sum(q, component);
            if e != 0.0 {
                grown.push(e);
            }
            q = s;
        }
        grown.push(q);
        expansion = grown;
    }
    expansion.iter().rev().find(|c| **c != 0.0).map_or(Ordering::Equal, |c| sign_of(*c))
}

/// The exact result of `op` as (nearest f64, sign of the rest). Inputs are exact f64 values of
/// the operands (f16/bf16/f32 values are exactly representable).
fn exact(op: FloatOp, a: f64, b: f64, c: f64) -> (f64, Ordering) {
    let (value, err) = match op {
        FloatOp::Add => {
            let (s, e) = two_sum(a, b);
            (s, sign_of(e))
        }
        FloatOp::Sub => {
            let (s, e) = two_sum(a, -b);
            (s, sign_of(e))
        }
        FloatOp::Mul => {
            let p = a * b;
            (p, sign_of(a.mul_add(b, -p)))
        }
        FloatOp::Fma => {
            let r = a.mul_add(b, c);
            let p = a * b;
            (r, sum_sign(&[a.mul_add(b, -p), p, c, -r]))
        }
        FloatOp::Div | FloatOp::Rcp => {
            let (a, b) = if op == FloatOp::Rcp { (1.0, a) } else { (a, b) };
            let q = a / b;
            (q, sign_of((-q).mul_add(b, a) * b.signum()))
        }
        FloatOp::Sqrt => {
            let s = a.sqrt();
            (s, sign_of((-s).mul_add(s, a)))
        }
    };
    if value.is_finite() {
        (value, err)
    } else {
        (value, Ordering::Equal)
    }
}

/// f32 with subnormals flushed to sign-preserving zero.
pub(crate) fn flush(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

fn flush_bits(bits: u64, fmt: Fmt, ftz: bool) -> u64 {
    if ftz && fmt == Fmt::F32 {
        u64::from(flush(f32::from_bits(bits as u32)).to_bits())
    } else {
        bits
    }
}

/// `fma.rn.f32` without a hardware FMA: the product is exact in f64, so only a sum that lands
/// exactly on an f32 midpoint (or in the subnormal range) can be rounded twice; those take the
/// exact path.
fn fma_f32(a: f32, b: f32, c: f32) -> f32 {
    let s = f64::from(a) * f64::from(b) + f64::from(c);
    let low = s.to_bits() & 0x1FFF_FFFF;
    if low != 0x1000_0000 && s.abs() >= f64::from(f32::MIN_POSITIVE) || !s.is_finite() {
        return s as f32;
    }
    let (value, err) = exact(FloatOp::Fma, f64::from(a), f64::from(b), f64::from(c));
    f32::from_bits(round_f64(value, err, Rnd::Nearest, Fmt::F32) as u32)
}

/// Round-to-nearest f32 arithmetic, the hot path (native IEEE operations).
pub(crate) fn f32_op(op: FloatOp, ftz: bool, a: u64, b: u64, c: u64) -> u64 {
    let (mut a, mut b, mut c) = (f32::from_bits(a as u32), f32::from_bits(b as u32), f32::from_bits(c as u32));
    if ftz {
        (a, b, c) = (flush(a), flush(b), flush(c));
    }
    let mut r = match op {
        FloatOp::Add => a + b,
        FloatOp::Sub => a - b,
        FloatOp::Mul => a * b,
        FloatOp::Fma => fma_f32(a, b, c),
        FloatOp::Div => a / b,
        FloatOp::Sqrt => a.sqrt(),
        FloatOp::Rcp => 1.0 / a,
    };
    if ftz {
        r = flush(r);
    }
    if r.is_nan() {
        canonical_nan(Fmt::F32)
    } else {
        u64::from(r.to_bits())
    }
}

/// Any format and rounding, `.ftz` (f32) and `.sat`, one scalar.
#[allow(clippy::too_many_arguments)]
pub(crate) fn float_op(op: FloatOp, fmt: Fmt, rnd: Rnd, ftz: bool, sat: bool, a: u64, b: u64, c: u64) -> u64 {
    let [a, b, c] = [a, b, c].map(|v| to_f64(flush_bits(v, fmt, ftz), fmt));
    let (value, err) = exact(op, a, b, c);
    let mut bits = round_f64(value, err, rnd, fmt);
    // an exactly cancelling sum is -0 when rounding down (IEEE 754 6.3)
    let addends = match op {
        FloatOp::Add => Some((a, b)),
        FloatOp::Sub => Some((a, -b)),
        FloatOp::Fma => Some((a * b, c)),
        _ => None,
    };
    if let Some((x, y)) = addends {
        if value == 0.0
            && err == Ordering::Equal
            && rnd == Rnd::Down
            && !(x == 0.0 && y == 0.0 && x.is_sign_positive() && y.is_sign_positive())
        {
            bits = round_f64(-0.0, Ordering::Equal, rnd, fmt);
        }
    }
    finish(bits, fmt, ftz, sat)
}

/// `.ftz` of the result, `.sat` clamping to [0, 1] (NaN to +0).
fn finish(bits: u64, fmt: Fmt, ftz: bool, sat: bool) -> u64 {
    let bits = flush_bits(bits, fmt, ftz);
    if !sat {
        return bits;
    }
    let v = to_f64(bits, fmt);
    if v > 1.0 {
        round_f64(1.0, Ordering::Equal, Rnd::Nearest, fmt)
    } else if v > 0.0 {
        bits
    } else {
        0
    }
}

/// Applies a 16-bit operation to both halves of packed f16x2 / bf16x2 values.
pub(crate) fn pairwise(a: u64, b: u64, c: u64, f: impl Fn(u64, u64, u64) -> u64) -> u64 {
    let half = |v: u64, i: u32| (v >> (16 * i)) & 0xFFFF;
    f(half(a, 0), half(b, 0), half(c, 0)) & 0xFFFF | (f(half(a, 1), half(b, 1), half(c, 1)) & 0xFFFF) << 16
}

/// The approximate instructions, computed in f64 and rounded once to f32 (or f64 for rcp/rsqrt).
pub(crate) fn approx(op: ApproxOp, f64_op: bool, ftz: bool, a: u64, b: u64) -> u64 {
    let fmt = if f64_op { Fmt::F64 } else { Fmt::F32 };
    let x = to_f64(flush_bits(a, fmt, ftz), fmt);
    let y = to_f64(flush_bits(b, fmt, ftz), fmt);
    let r = match op {
        ApproxOp::Ex2 => x.exp2(),
        ApproxOp::Lg2 => x.log2(),
        ApproxOp::Rcp => 1.0 / x,
        ApproxOp::Rsqrt => 1.0 / x.sqrt(),
        ApproxOp::Sqrt => x.sqrt(),
        ApproxOp::Sin => x.sin(),
        ApproxOp::Cos => x.cos(),
        ApproxOp::Tanh => x.tanh(),
        ApproxOp::Div => x / y,
    };
    let bits = if f64_op {
        if r.is_nan() {
            canonical_nan(Fmt::F64)
        } else {
            r.to_bits()
        }
    } else {
        round_f64(r, Ordering::Equal, Rnd::Nearest, fmt)
    };
    flush_bits(bits, fmt, ftz)
}

/// `min` / `max`: a NaN operand yields the other one (both NaN: NaN); `.NaN` propagates NaN;
/// -0 counts as less than +0.
pub(crate) fn min_max(max: bool, nan: bool, fmt: Fmt, ftz: bool, a: u64, b: u64) -> u64 {
    let (a, b) = (flush_bits(a, fmt, ftz), flush_bits(b, fmt, ftz));
    let (x, y) = (to_f64(a, fmt), to_f64(b, fmt));
    match (x.is_nan(), y.is_nan()) {
        (true, true) => return canonical_nan(fmt),
        (true, false) | (false, true) if nan => return canonical_nan(fmt),
        (true, false) => return b,
        (false, true) => return a,
        (false, false) => {}
    }
    let a_first = match x.partial_cmp(&y) {
        Some(Ordering::Equal) => x.is_sign_negative() != max, // a is -0 for min, +0 for max
        Some(Ordering::Less) => !max,
        _ => max,
    };
    if a_first {
        a
    } else {
        b
    }
}

pub(crate) fn sign_mask(fmt: Fmt) -> u64 {
    let (frac, exp) = layout(fmt);
    1 << (frac + exp)
}

pub(crate) fn abs_neg(neg: bool, fmt: Fmt, ftz: bool, a: u64) -> u64 {
    let a = flush_bits(a, fmt, ftz);
    if neg {
        a ^ sign_mask(fmt)
    } else {
        a & !sign_mask(fmt)
    }
}

pub(crate) fn testp(op: TestpOp, fmt: Fmt, a: u64) -> bool {
    let (frac_bits, exp_bits) = layout(fmt);
    let exp = (a >> frac_bits) & ((1 << exp_bits) - 1);
    let frac = a & ((1 << frac_bits) - 1);
    let max_exp = (1 << exp_bits) - 1;
    match op {
        TestpOp::Finite => exp != max_exp,
        TestpOp::Infinite => exp == max_exp && frac == 0,
        TestpOp::Number => !(exp == max_exp && frac != 0),
        TestpOp::NotANumber => exp == max_exp && frac != 0,
        TestpOp::Normal => exp != 0 && exp != max_exp,
        TestpOp::Subnormal => exp == 0 && frac != 0,
    }
}

/// Integer value range of a type.
fn int_range(bits: u8, signed: bool) -> (i128, i128) {
    if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

/// An integer as it sits in a register: sign- or zero-extended from `bits` to 64.
pub(crate) fn int_value(raw: u64, bits: u8, signed: bool) -> i128 {
    let shift = 64 - u32::from(bits);
    if signed {
        i128::from(((raw << shift) as i64) >> shift)
    } else {
        i128::from((raw << shift) >> shift)
    }
}

/// The options of one `cvt`.
#[derive(Clone, Copy)]
pub(crate) struct Convert {
    pub dst: CvtTy,
    pub src: CvtTy,
    pub rnd: Rnd,
    /// `.rni`-style rounding (to an integral value)
    pub integral: bool,
    pub sat: bool,
    pub ftz: bool,
    pub relu: bool,
}

pub(crate) fn cvt(o: Convert, a: u64) -> u64 {
    match (o.dst, o.src) {
        (CvtTy::Int { bits, signed }, CvtTy::Int { bits: sbits, signed: ssigned }) => {
            let v = int_value(a, sbits, ssigned);
            let v = if o.sat {
                let (lo, hi) = int_range(bits, signed);
                v.clamp(lo, hi)
            } else {
                v
            };
            int_value(v as u64, bits, signed) as u64
        }
        (CvtTy::Float(fmt), CvtTy::Int { bits, signed }) => {
            let v = int_value(a, bits, signed);
            let hi = v as f64;
            let err = v.cmp(&(hi as i128));
            finish(round_f64(hi, err, o.rnd, fmt), fmt, o.ftz, o.sat)
        }
        (CvtTy::Int { bits, signed }, CvtTy::Float(fmt)) => {
            let x = to_f64(flush_bits(a, fmt, o.ftz), fmt);
            if x.is_nan() {
                return 0;
            }
            let (lo, hi) = int_range(bits, signed);
            // compare as f64 before converting: `hi as f64` may round up past the range
            let r = integral(x, o.rnd);
            let v = if r <= lo as f64 {
                lo
            } else if r >= hi as f64 {
                hi
            } else {
                r as i128
            };
            int_value(v as u64, bits, signed) as u64
        }
        (CvtTy::Float(dfmt), CvtTy::Float(sfmt)) => {
            let x = to_f64(flush_bits(a, sfmt, o.ftz), sfmt);
            let x = if o.integral { integral(x, o.rnd) } else { x };
            let rnd = if o.integral { Rnd::Nearest } else { o.rnd };
            let mut bits = round_f64(x, Ordering::Equal, rnd, dfmt);
            if o.relu && !x.is_nan() && x.is_sign_negative() {
                bits = 0;
            }
            finish(bits, dfmt, o.ftz, o.sat)
        }
    }
}

fn integral(x: f64, rnd: Rnd) -> f64 {
    match rnd {
        Rnd::Nearest => x.round_ties_even(),
        Rnd::Zero => x.trunc(),
        Rnd::Down => x.floor(),
        Rnd::Up => x.ceil(),
    }
}

/// `cvt.rn.bf16x2.f32 d, a, b`: a to the upper half, b to the lower.
pub(crate) fn cvt_pack(fmt: Fmt, rnd: Rnd, relu: bool, a: u64, b: u64) -> u64 {
    let one = |v: u64| {
        let x = to_f64(v, Fmt::F32);
        if relu && !x.is_nan() && x.is_sign_negative() {
            0
        } else {
            round_f64(x, Ordering::Equal, rnd, fmt)
        }
    };
    one(a) << 16 | one(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_round(value: f64, err: Ordering, rnd: Rnd) -> f32 {
        f32::from_bits(round_f64(value, err, rnd, Fmt::F32) as u32)
    }

    #[test]
    fn rounding_respects_direction_and_sticky_error() {
        let one = 1.0f32;
        let tiny = 2f64.powi(-40); // below f32 resolution, within f64's
        assert_eq!(f32_round(1.0 + tiny, Ordering::Equal, Rnd::Up), one.next_up());
        assert_eq!(f32_round(1.0, Ordering::Greater, Rnd::Up), one.next_up());
        assert_eq!(f32_round(1.0, Ordering::Greater, Rnd::Zero), one);
        assert_eq!(f32_round(1.0, Ordering::Less, Rnd::Zero), one.next_down());
        assert_eq!(f32_round(1.0, Ordering::Less, Rnd::Nearest), one);
        assert_eq!(f32_round(-1.0, Ordering::Less, Rnd::Down), -one.next_up());
        // an exact midpoint breaks by the error, or to even without one
        let mid = 1.0 + 2f64.powi(-24);
        assert_eq!(f32_round(mid, Ordering::Equal, Rnd::Nearest), one);
        assert_eq!(f32_round(mid, Ordering::Greater, Rnd::Nearest), one.next_up());
        // overflow and the subnormal range
        assert_eq!(f32_round(1e39, Ordering::Equal, Rnd::Nearest), f32::INFINITY);
        assert_eq!(f32_round(1e39, Ordering::Equal, Rnd::Zero), f32::MAX);
        assert_eq!(f32_round(-1e39, Ordering::Equal, Rnd::Up), -f32::MAX);
        assert_eq!(f32_round(1e-46, Ordering::Equal, Rnd::Up), f32::from_bits(1));
        assert_eq!(f32_round(1e-46, Ordering::Equal, Rnd::Nearest), 0.0);
        assert_eq!(f32_round(f64::from(f32::from_bits(3)), Ordering::Equal, Rnd::Nearest).to_bits(), 3);
        assert_eq!(round_f64(1.0, Ordering::Less, Rnd::Zero, Fmt::F64), 1f64.next_down().to_bits());
        assert_eq!(round_f64(1.0 / 3.0, Ordering::Equal, Rnd::Nearest, Fmt::BF16), 0x3EAB);
    }

    #[test]
    fn f16_values_decode() {
        assert_eq!(to_f64(0x3C00, Fmt::F16), 1.0);
        assert_eq!(to_f64(0x0001, Fmt::F16), 2f64.powi(-24));
        assert_eq!(to_f64(0xFC00, Fmt::F16), f64::NEG_INFINITY);
        assert_eq!(round_f64(65520.0, Ordering::Equal, Rnd::Nearest, Fmt::F16), 0x7C00);
    }

    #[test]
    fn exact_sum_signs() {
        assert_eq!(sum_sign(&[1.0, 1e-300, -1.0]), Ordering::Greater);
        assert_eq!(sum_sign(&[1e300, -1e300, -1e-300]), Ordering::Less);
        assert_eq!(sum_sign(&[2.0, -1.0, -1.0]), Ordering::Equal);
    }
}
