//! Integer semantics, width-generic: values arrive as raw register bits and are extended from
//! `bits` as each operation needs; results may carry garbage above `bits` (readers truncate).

use crate::float::int_value;
use crate::inst::{CarryOp, IntOp, IntUnOp, PrmtMode};

fn mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

fn zx(v: u64, bits: u8) -> u64 {
    v & mask(bits)
}

fn sx(v: u64, bits: u8) -> i64 {
    int_value(v, bits, true) as i64
}

/// The full product of two `bits`-wide values, as two's-complement bits.
fn product(a: u64, b: u64, bits: u8, signed: bool) -> u128 {
    if signed {
        (int_value(a, bits, true) * int_value(b, bits, true)) as u128
    } else {
        u128::from(zx(a, bits)) * u128::from(zx(b, bits))
    }
}

pub(crate) fn binary(op: IntOp, bits: u8, signed: bool, a: u64, b: u64) -> u64 {
    match op {
        IntOp::Add => a.wrapping_add(b),
        IntOp::Sub => a.wrapping_sub(b),
        IntOp::AddSat => (sx(a, 32) + sx(b, 32)).clamp(i32::MIN.into(), i32::MAX.into()) as u64,
        IntOp::SubSat => (sx(a, 32) - sx(b, 32)).clamp(i32::MIN.into(), i32::MAX.into()) as u64,
        IntOp::MulLo => a.wrapping_mul(b),
        IntOp::MulHi => (product(a, b, bits, signed) >> bits) as u64,
        IntOp::MulWide => product(a, b, bits, signed) as u64,
        // Division by zero is undefined in PTX; these are what NVIDIA GPUs return.
        IntOp::Div if zx(b, bits) == 0 => mask(bits),
        IntOp::Rem if zx(b, bits) == 0 => a,
        IntOp::Div if signed => sx(a, bits).wrapping_div(sx(b, bits)) as u64,
        IntOp::Div => zx(a, bits) / zx(b, bits),
        IntOp::Rem if signed => sx(a, bits).wrapping_rem(sx(b, bits)) as u64,
        IntOp::Rem => zx(a, bits) % zx(b, bits),
        IntOp::Min if signed => sx(a, bits).min(sx(b, bits)) as u64,
        IntOp::Min => zx(a, bits).min(zx(b, bits)),
        IntOp::Max if signed => sx(a, bits).max(sx(b, bits)) as u64,
        IntOp::Max => zx(a, bits).max(zx(b, bits)),
        IntOp::And => a & b,
        IntOp::Or => a | b,
        IntOp::Xor => a ^ b,
        // Shift amounts are unsigned 32-bit; amounts past the width shift everything out.
        IntOp::Shl => {
            let n = zx(b, 32);
            if n >= u64::from(bits) {
                0
            } else {
                a << n
            }
        }
        IntOp::Shr if signed => (sx(a, bits) >> zx(b, 32).min(63)) as u64,
        IntOp::Shr => {
            let n = zx(b, 32);
            if n >= u64::from(bits) {
                0
            } else {
                zx(a, bits) >> n
            }
        }
    }
}

pub(crate) fn unary(op: IntUnOp, bits: u8, signed: bool, a: u64) -> u64 {
    let a_bits = zx(a, bits);
    match op {
        IntUnOp::Not => !a,
        IntUnOp::Cnot => u64::from(a_bits == 0),
        IntUnOp::Neg => a.wrapping_neg(),
        IntUnOp::Abs => sx(a, bits).wrapping_abs() as u64,
        IntUnOp::Popc => u64::from(a_bits.count_ones()),
        IntUnOp::Clz => u64::from(a_bits.leading_zeros() - (64 - u32::from(bits))),
        IntUnOp::Brev => a_bits.reverse_bits() >> (64 - u32::from(bits)),
        IntUnOp::Bfind | IntUnOp::BfindShiftAmount => {
            // most significant non-sign bit
            let v = if signed && sx(a, bits) < 0 { zx(!a, bits) } else { a_bits };
            if v == 0 {
                u64::from(u32::MAX)
            } else {
                let pos = 63 - u64::from(v.leading_zeros());
                if op == IntUnOp::BfindShiftAmount {
                    u64::from(bits) - 1 - pos
                } else {
                    pos
                }
            }
        }
    }
}

pub(crate) fn mad(hi: bool, wide: bool, bits: u8, signed: bool, a: u64, b: u64, c: u64) -> u64 {
    let full = product(a, b, bits, signed);
    let part = if hi {
        (full >> bits) as u64
    } else if wide {
        full as u64
    } else {
        a.wrapping_mul(b)
    };
    part.wrapping_add(c)
}

/// `(result, carry out)` of an `add.cc` / `addc` / `sub.cc` / `subc` / `mad.cc` / `madc` step.
pub(crate) fn carry(op: CarryOp, bits: u8, signed: bool, a: u64, b: u64, c: u64, carry_in: u64) -> (u64, u64) {
    let width = u32::from(bits);
    let (a, b, c) = (u128::from(zx(a, bits)), u128::from(zx(b, bits)), u128::from(zx(c, bits)));
    let carry_in = u128::from(carry_in & 1);
    match op {
        CarryOp::Add => {
            let full = a + b + carry_in;
            (full as u64, (full >> width) as u64 & 1)
        }
        CarryOp::Sub => {
            // the flag is the borrow
            let subtrahend = b + carry_in;
            (a.wrapping_sub(subtrahend) as u64, u64::from(subtrahend > a))
        }
        CarryOp::MadLo | CarryOp::MadHi => {
            let full = product(a as u64, b as u64, bits, signed);
            let part = if op == CarryOp::MadHi { (full >> width) & u128::from(mask(bits)) } else { full & u128::from(mask(bits)) };
            let full = part + c + carry_in;
            (full as u64, (full >> width) as u64 & 1)
        }
    }
}

pub(crate) fn bfe(bits: u8, signed: bool, a: u64, pos: u64, len: u64) -> u64 {
    let (pos, len, msb) = (pos & 0xFF, len & 0xFF, u64::from(bits) - 1);
    let sign = signed && len != 0 && (a >> (pos + len - 1).min(msb)) & 1 == 1;
    let mut d = 0u64;
    for i in 0..=msb {
        let bit = if i < len && pos + i <= msb { (a >> (pos + i)) & 1 == 1 } else { sign };
        d |= u64::from(bit) << i;
    }
    d
}

/// `bfi d, f, b, pos, len`: `b` with `len` bits of `f` inserted at `pos`.
pub(crate) fn bfi(bits: u8, f: u64, b: u64, pos: u64, len: u64) -> u64 {
    let (pos, len) = (pos & 0xFF, len & 0xFF);
    let mut d = b;
    for i in 0..len {
        if pos + i >= u64::from(bits) {
            break;
        }
        d = (d & !(1 << (pos + i))) | (((f >> i) & 1) << (pos + i));
    }
    d
}

pub(crate) fn prmt(mode: PrmtMode, a: u64, b: u64, c: u64) -> u64 {
    let source = (zx(b, 32) << 32) | zx(a, 32);
    let byte = |i: u64| (source >> (8 * (i & 7))) & 0xFF;
    let n = c & 3;
    let mut d = 0u64;
    for i in 0..4u64 {
        let value = match mode {
            PrmtMode::Default => {
                let selector = (c >> (4 * i)) & 0xF;
                let v = byte(selector);
                if selector & 8 != 0 {
                    if v & 0x80 != 0 {
                        0xFF
                    } else {
                        0
                    }
                } else {
                    v
                }
            }
            PrmtMode::F4e => byte(n + i),
            PrmtMode::B4e => byte(n.wrapping_sub(i)),
            PrmtMode::Rc8 => byte(n),
            PrmtMode::Ecl => byte(i.max(n)),
            PrmtMode::Ecr => byte(i.min(n)),
            PrmtMode::Rc16 => byte((i & 1) + 2 * (n & 1)),
        };
        d |= value << (8 * i);
    }
    d
}

/// `lop3`: bit i of `lut` is the result for (a, b, c) bits forming i = 4a + 2b + c.
pub(crate) fn lop3(a: u64, b: u64, c: u64, lut: u8) -> u64 {
    let mut d = 0u64;
    for i in 0..8u8 {
        if lut >> i & 1 == 1 {
            let pick = |v: u64, bit: u8| if i & bit != 0 { v } else { !v };
            d |= pick(a, 4) & pick(b, 2) & pick(c, 1);
        }
    }
    zx(d, 32)
}

/// Funnel shift of the 64-bit `{b, a}`: `.l` returns its upper word after a left shift, `.r`
/// its lower word after a right shift.
pub(crate) fn shf(left: bool, clamp: bool, a: u64, b: u64, c: u64) -> u64 {
    let n = if clamp { zx(c, 32).min(32) } else { c & 31 };
    let pair = (zx(b, 32) << 32) | zx(a, 32);
    if left {
        zx((pair << n) >> 32, 32)
    } else {
        zx(pair >> n, 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prmt_modes_follow_the_isa_tables() {
        let (a, b) = (0x3322_1100, 0x7766_5544);
        assert_eq!(prmt(PrmtMode::Default, a, b, 0x3210), 0x3322_1100);
        assert_eq!(prmt(PrmtMode::Default, a, b, 0x0040), 0x0000_4400);
        assert_eq!(prmt(PrmtMode::Default, 0x80, 0, 0x8888), 0xFFFF_FFFF); // sign replication
        assert_eq!(prmt(PrmtMode::F4e, a, b, 1), 0x4433_2211);
        assert_eq!(prmt(PrmtMode::B4e, a, b, 0), 0x5566_7700);
        assert_eq!(prmt(PrmtMode::Rc8, a, b, 2), 0x2222_2222);
        assert_eq!(prmt(PrmtMode::Ecl, a, b, 1), 0x3322_1111);
        assert_eq!(prmt(PrmtMode::Ecr, a, b, 2), 0x2222_1100);
        assert_eq!(prmt(PrmtMode::Rc16, a, b, 1), 0x3322_3322);
    }

    #[test]
    fn bit_fields() {
        assert_eq!(bfe(32, false, 0xF0F0, 4, 8), 0x0F);
        assert_eq!(bfe(32, true, 0x0000_0F00, 8, 4), 0xFFFF_FFFF);
        assert_eq!(bfe(32, true, 0x8000_0000, 40, 8), 0xFFFF_FFFF); // pos past msb: the sign bit
        assert_eq!(bfi(32, 0xAB, 0xFFFF_0000, 4, 8), 0xFFFF_0AB0);
        assert_eq!(unary(IntUnOp::Bfind, 32, true, 0xFFFF_FFFF), 0xFFFF_FFFF);
        assert_eq!(unary(IntUnOp::Bfind, 32, true, 0xFFFF_0000), 15);
        assert_eq!(unary(IntUnOp::BfindShiftAmount, 32, false, 0x10), 27);
        assert_eq!(lop3(0xF0, 0xCC, 0xAA, 0x96), 0xF0 ^ 0xCC ^ 0xAA);
    }
}
