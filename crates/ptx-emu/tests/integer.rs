//! Integer instructions against Rust on edge values and random ones: every width and signedness,
//! shifts past the width, carry chains, and the bit-manipulation family (prmt, lop3, bfe, bfi,
//! shf, brev, popc, clz, bfind).

mod common;

use common::{map, randoms};

const EDGES32: [u32; 12] = [0, 1, 2, 3, 0x7FFF_FFFF, 0x8000_0000, 0x8000_0001, 0xFFFF_FFFF, 0xFFFF_FFFE, 12345, 0xDEAD_BEEF, 0x0001_0000];

fn pairs32() -> (Vec<u64>, Vec<u64>) {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for &x in &EDGES32 {
        for &y in &EDGES32 {
            a.push(u64::from(x));
            b.push(u64::from(y));
        }
    }
    let r = randoms(1, 64);
    a.extend(r.iter().map(|v| v & 0xFFFF_FFFF));
    b.extend(r.iter().map(|v| v >> 32));
    (a, b)
}

fn check32(body: &str, ty: &str, expected: impl Fn(u32, u32) -> u32) {
    let (a, b) = pairs32();
    let out = map([ty, ty, ty, ty], body, [&a, &b, &[]]);
    for ((x, y), got) in a.iter().zip(&b).zip(out) {
        let want = expected(*x as u32, *y as u32);
        assert_eq!(got as u32, want, "{body} with a={x:#x} b={y:#x}: got {got:#x}, want {want:#x}");
    }
}

#[test]
fn arithmetic_32_bit() {
    check32("add.u32 %d, %a, %b;", "u32", u32::wrapping_add);
    check32("sub.s32 %d, %a, %b;", "s32", u32::wrapping_sub);
    check32("mul.lo.u32 %d, %a, %b;", "u32", u32::wrapping_mul);
    check32("mul.hi.u32 %d, %a, %b;", "u32", |x, y| ((u64::from(x) * u64::from(y)) >> 32) as u32);
    check32("mul.hi.s32 %d, %a, %b;", "s32", |x, y| ((i64::from(x as i32) * i64::from(y as i32)) >> 32) as u32);
    check32("div.u32 %d, %a, %b;", "u32", |x, y| x.checked_div(y).unwrap_or(u32::MAX));
    check32("div.s32 %d, %a, %b;", "s32", |x, y| if y == 0 { u32::MAX } else { (x as i32).wrapping_div(y as i32) as u32 });
    check32("rem.u32 %d, %a, %b;", "u32", |x, y| x.checked_rem(y).unwrap_or(x));
    check32("rem.s32 %d, %a, %b;", "s32", |x, y| if y == 0 { x } else { (x as i32).wrapping_rem(y as i32) as u32 });
    check32("min.s32 %d, %a, %b;", "s32", |x, y| (x as i32).min(y as i32) as u32);
    check32("max.u32 %d, %a, %b;", "u32", u32::max);
    check32("add.sat.s32 %d, %a, %b;", "s32", |x, y| (x as i32).saturating_add(y as i32) as u32);
    check32("sub.sat.s32 %d, %a, %b;", "s32", |x, y| (x as i32).saturating_sub(y as i32) as u32);
    check32("abs.s32 %d, %a;", "s32", |x, _| (x as i32).wrapping_abs() as u32);
    check32("neg.s32 %d, %a;", "s32", |x, _| x.wrapping_neg());
    check32("mad.lo.s32 %d, %a, %b, %a;", "s32", |x, y| x.wrapping_mul(y).wrapping_add(x));
    check32("mad.hi.u32 %d, %a, %b, 7;", "u32", |x, y| (((u64::from(x) * u64::from(y)) >> 32) as u32).wrapping_add(7));
}

#[test]
fn bitwise_and_shifts_past_the_width() {
    check32("and.b32 %d, %a, %b;", "b32", |x, y| x & y);
    check32("or.b32 %d, %a, %b;", "b32", |x, y| x | y);
    check32("xor.b32 %d, %a, %b;", "b32", |x, y| x ^ y);
    check32("not.b32 %d, %a;", "b32", |x, _| !x);
    check32("cnot.b32 %d, %a;", "b32", |x, _| u32::from(x == 0));
    let shifts: Vec<u64> = (0..70).collect();
    let values = vec![0x8123_4567u64; shifts.len()];
    type Binary = fn(u32, u32) -> u32;
    let cases: [(&str, &str, Binary); 3] = [
        ("shl.b32 %d, %a, %b;", "b32", |x, n| x.checked_shl(n).unwrap_or(0)),
        ("shr.u32 %d, %a, %b;", "u32", |x, n| x.checked_shr(n).unwrap_or(0)),
        ("shr.s32 %d, %a, %b;", "s32", |x, n| ((x as i32) >> n.min(31)) as u32),
    ];
    for (body, ty, f) in cases {
        let out = map([ty, "u32", "u32", ty], body, [&values, &shifts, &[]]);
        for (n, got) in shifts.iter().zip(out) {
            assert_eq!(got as u32, f(0x8123_4567, *n as u32), "{body} by {n}");
        }
    }
    let wide: Vec<u64> = vec![0x8000_0000_0000_0001; shifts.len()];
    let out = map(["b64", "u32", "u32", "b64"], "shl.b64 %d, %a, %b;", [&wide, &shifts, &[]]);
    assert!(out.iter().zip(&shifts).all(|(&got, &n)| got == 0x8000_0000_0000_0001u64.checked_shl(n as u32).unwrap_or(0)));
    let out = map(["s64", "u32", "u32", "s64"], "shr.s64 %d, %a, %b;", [&wide, &shifts, &[]]);
    assert!(out.iter().zip(&shifts).all(|(&got, &n)| got == (0x8000_0000_0000_0001u64 as i64 >> n.min(63)) as u64));
    let out = map(["b16", "u32", "u32", "b16"], "shl.b16 %d, %a, %b;", [&[0x00F1; 20], &shifts[..20], &[]]);
    assert!(out.iter().zip(&shifts).all(|(&got, &n)| got & 0xFFFF == u64::from(0x00F1u16.checked_shl(n as u32).unwrap_or(0))));
}

#[test]
fn sixteen_and_sixty_four_bit_widths() {
    let a: Vec<u64> = randoms(2, 200);
    let b: Vec<u64> = randoms(3, 200).iter().map(|v| v | 1).collect();
    let out = map(["u64", "u64", "u64", "u64"], "mul.hi.u64 %d, %a, %b;", [&a, &b, &[]]);
    assert!(a.iter().zip(&b).zip(&out).all(|((x, y), &d)| d == ((u128::from(*x) * u128::from(*y)) >> 64) as u64));
    let out = map(["s64", "s64", "s64", "s64"], "mul.hi.s64 %d, %a, %b;", [&a, &b, &[]]);
    assert!(a.iter().zip(&b).zip(&out).all(|((x, y), &d)| d == ((i128::from(*x as i64) * i128::from(*y as i64)) >> 64) as u64));
    let out = map(["s64", "s64", "s64", "s64"], "div.s64 %d, %a, %b;", [&a, &b, &[]]);
    assert!(a.iter().zip(&b).zip(&out).all(|((x, y), &d)| d == (*x as i64).wrapping_div(*y as i64) as u64));
    let out = map(["u64", "u64", "u64", "u64"], "rem.u64 %d, %a, %b;", [&a, &b, &[]]);
    assert!(a.iter().zip(&b).zip(&out).all(|((x, y), &d)| d == x % y));
    let out = map(["s32", "s32", "s32", "s64"], "mul.wide.s32 %d, %a, %b;", [&a, &b, &[]]);
    assert!(a.iter().zip(&b).zip(&out).all(|((x, y), &d)| d == (i64::from(*x as i32) * i64::from(*y as i32)) as u64));
    let out = map(["u32", "u32", "u64", "u64"], "mad.wide.u32 %d, %a, %b, %c;", [&a, &b, &a]);
    assert!(a.iter().zip(&b).zip(&out).all(|((x, y), &d)| d == (u64::from(*x as u32) * u64::from(*y as u32)).wrapping_add(*x)));
    let out = map(["s16", "s16", "s16", "s16"], "max.s16 %d, %a, %b;", [&a, &b, &[]]);
    assert!(a.iter().zip(&b).zip(&out).all(|((x, y), &d)| d as u16 == (*x as i16).max(*y as i16) as u16));
    let out = map(["u16", "u16", "u16", "u32"], "mul.wide.u16 %d, %a, %b;", [&a, &b, &[]]);
    assert!(a.iter().zip(&b).zip(&out).all(|((x, y), &d)| d as u32 == u32::from(*x as u16) * u32::from(*y as u16)));
    let out = map(["s64", "s64", "s64", "s64"], "min.s64 %d, %a, %b;", [&a, &b, &[]]);
    assert!(a.iter().zip(&b).zip(&out).all(|((x, y), &d)| d as i64 == (*x as i64).min(*y as i64)));
}

#[test]
fn carry_chains_add_and_subtract_128_bits() {
    // a 128-bit add and subtract as four 32-bit limbs
    let body = "
        .reg .b32 %a0, %a1, %a2, %a3, %b0, %b1, %b2, %b3, %s0, %s1, %s2, %s3;
        mov.b64 {%a0, %a1}, %a; mov.b64 {%a2, %a3}, %c;
        mov.b64 {%b0, %b1}, %b; mov.b64 {%b2, %b3}, %b;
        add.cc.u32 %s0, %a0, %b0;
        addc.cc.u32 %s1, %a1, %b1;
        addc.cc.u32 %s2, %a2, %b2;
        addc.u32 %s3, %a3, %b3;
        xor.b32 %s0, %s0, %s2;
        xor.b32 %s1, %s1, %s3;
        mov.b64 %d, {%s0, %s1};";
    let sub_body = body.replace("add.cc", "sub.cc").replace("addc", "subc");
    let (a, b, c) = (randoms(4, 100), randoms(5, 100), randoms(6, 100));
    let add = map(["b64", "b64", "b64", "b64"], body, [&a, &b, &c]);
    let sub = map(["b64", "b64", "b64", "b64"], &sub_body, [&a, &b, &c]);
    for i in 0..a.len() {
        let x = u128::from(c[i]) << 64 | u128::from(a[i]);
        let y = u128::from(b[i]) << 64 | u128::from(b[i]);
        let fold = |v: u128| (v as u64) ^ ((v >> 64) as u64);
        assert_eq!(add[i], fold(x.wrapping_add(y)), "add {i}");
        assert_eq!(sub[i], fold(x.wrapping_sub(y)), "sub {i}");
    }
    // mad.lo.cc / madc.hi: the low and high word of a*b + c as a 64-bit pair
    let body = "
        .reg .b32 %x, %y, %z, %lo, %hi;
        cvt.u32.u64 %x, %a; cvt.u32.u64 %y, %b; cvt.u32.u64 %z, %c;
        mad.lo.cc.u32 %lo, %x, %y, %z;
        madc.hi.u32 %hi, %x, %y, 0;
        mov.b64 %d, {%lo, %hi};";
    let out = map(["b64", "b64", "b64", "b64"], body, [&a, &b, &c]);
    for i in 0..a.len() {
        let want = u64::from(a[i] as u32) * u64::from(b[i] as u32) + u64::from(c[i] as u32);
        assert_eq!(out[i], want, "mad chain {i}");
    }
}

/// PTX's bfe and bfi, transcribed from the ISA's pseudocode.
fn bfe_model(a: u32, pos: u32, len: u32, signed: bool) -> u32 {
    let (pos, len) = (pos & 0xFF, len & 0xFF);
    let sbit = signed && len != 0 && (a >> (pos + len - 1).min(31)) & 1 == 1;
    (0..32).fold(0, |d, i| d | (u32::from(if i < len && pos + i <= 31 { (a >> (pos + i)) & 1 == 1 } else { sbit }) << i))
}

#[test]
fn bit_manipulation() {
    let r = randoms(7, 300);
    let a: Vec<u64> = r.iter().map(|v| v & 0xFFFF_FFFF).collect();
    let pos: Vec<u64> = r.iter().map(|v| (v >> 32) % 40).collect();
    let len: Vec<u64> = r.iter().map(|v| (v >> 40) % 40).collect();
    for (ty, signed) in [("u32", false), ("s32", true)] {
        let out = map([ty, "u32", "u32", ty], &format!("bfe.{ty} %d, %a, %b, %c;"), [&a, &pos, &len]);
        for i in 0..a.len() {
            assert_eq!(
                out[i] as u32,
                bfe_model(a[i] as u32, pos[i] as u32, len[i] as u32, signed),
                "bfe.{ty} {:#x} {} {}",
                a[i],
                pos[i],
                len[i]
            );
        }
    }
    let base = randoms(8, 300);
    let out = map(["b32", "b32", "b32", "b32"], "bfi.b32 %d, %a, %b, %c, 13;", [&a, &base, &pos]);
    for i in 0..a.len() {
        let mut want = base[i] as u32;
        for k in 0..13u32 {
            let at = pos[i] as u32 + k;
            if at < 32 {
                want = (want & !(1 << at)) | (((a[i] as u32 >> k) & 1) << at);
            }
        }
        assert_eq!(out[i] as u32, want, "bfi {i}");
    }
    let out = map(["b32", "b32", "b32", "u32"], "popc.b32 %d, %a;", [&a, &[], &[]]);
    assert!(a.iter().zip(&out).all(|(x, &d)| d == u64::from((*x as u32).count_ones())));
    let out = map(["b32", "b32", "b32", "u32"], "clz.b32 %d, %a;", [&a, &[], &[]]);
    assert!(a.iter().zip(&out).all(|(x, &d)| d == u64::from((*x as u32).leading_zeros())));
    let shifted: Vec<u64> = r.iter().map(|x| x >> (x & 63)).collect();
    let out = map(["b64", "b64", "b64", "u32"], "clz.b64 %d, %a;", [&shifted, &[], &[]]);
    assert!(r.iter().zip(&out).all(|(x, &d)| d == u64::from((x >> (x & 63)).leading_zeros())));
    let out = map(["b32", "b32", "b32", "b32"], "brev.b32 %d, %a;", [&a, &[], &[]]);
    assert!(a.iter().zip(&out).all(|(x, &d)| d as u32 == (*x as u32).reverse_bits()));
    let out = map(["u32", "u32", "u32", "u32"], "bfind.u32 %d, %a;", [&[0, 1, 0x8000_0000, 0x00F0_0000], &[], &[]]);
    assert_eq!(out, [0xFFFF_FFFF, 0, 31, 23]);
    let out = map(["s32", "s32", "s32", "u32"], "bfind.s32 %d, %a;", [&[0xFFFF_FFFF, 0xFFFF_FF00, 5], &[], &[]]);
    assert_eq!(out, [0xFFFF_FFFF, 7, 2]);
    let out = map(["u32", "u32", "u32", "u32"], "bfind.shiftamt.u32 %d, %a;", [&[1, 0x8000_0000], &[], &[]]);
    assert_eq!(out, [31, 0]);
}

#[test]
fn funnel_shifts_wrap_and_clamp() {
    let amounts: Vec<u64> = (0..70).collect();
    let (lo, hi) = (0x89AB_CDEFu64, 0x0123_4567u64);
    for (mode, left) in [("l.wrap", true), ("l.clamp", true), ("r.wrap", false), ("r.clamp", false)] {
        let out = map(["b32", "b32", "u32", "b32"], &format!("shf.{mode}.b32 %d, %a, %b, %c;"), [&vec![lo; 70], &vec![hi; 70], &amounts]);
        for (&n, got) in amounts.iter().zip(out) {
            let n = if mode.ends_with("wrap") { n & 31 } else { n.min(32) };
            let pair = hi << 32 | lo;
            let want = if left { ((pair << n) >> 32) & 0xFFFF_FFFF } else { (pair >> n) & 0xFFFF_FFFF };
            assert_eq!(got, want, "shf.{mode} by {n}");
        }
    }
}

#[test]
fn prmt_in_every_mode_and_lop3_for_every_table() {
    let a = vec![0x3322_1100u64; 64];
    let b = vec![0xF766_5544u64; 64];
    let selectors: Vec<u64> = randoms(9, 64).iter().map(|v| v & 0xFFFF).collect();
    let out = map(["b32", "b32", "b32", "b32"], "prmt.b32 %d, %a, %b, %c;", [&a, &b, &selectors]);
    let bytes = [0x00u8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0xF7];
    for (s, got) in selectors.iter().zip(out) {
        let want = (0..4).fold(0u32, |d, i| {
            let sel = (s >> (4 * i)) & 0xF;
            let v = bytes[(sel & 7) as usize];
            let v = if sel & 8 != 0 {
                if v & 0x80 != 0 {
                    0xFF
                } else {
                    0
                }
            } else {
                v
            };
            d | u32::from(v) << (8 * i)
        });
        assert_eq!(got as u32, want, "prmt selector {s:#06x}");
    }
    // the mode tables of the ISA, byte indices listed b3 b2 b1 b0 for selectors 0..3
    let tables: [(&str, [[usize; 4]; 4]); 6] = [
        ("f4e", [[3, 2, 1, 0], [4, 3, 2, 1], [5, 4, 3, 2], [6, 5, 4, 3]]),
        ("b4e", [[5, 6, 7, 0], [6, 7, 0, 1], [7, 0, 1, 2], [0, 1, 2, 3]]),
        ("rc8", [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]]),
        ("ecl", [[3, 2, 1, 0], [3, 2, 1, 1], [3, 2, 2, 2], [3, 3, 3, 3]]),
        ("ecr", [[0, 0, 0, 0], [1, 1, 1, 0], [2, 2, 1, 0], [3, 2, 1, 0]]),
        ("rc16", [[1, 0, 1, 0], [3, 2, 3, 2], [1, 0, 1, 0], [3, 2, 3, 2]]),
    ];
    for (mode, table) in tables {
        let out = map(["b32", "b32", "b32", "b32"], &format!("prmt.b32.{mode} %d, %a, %b, %c;"), [&a[..4], &b[..4], &[0, 1, 2, 3]]);
        for (sel, got) in out.iter().enumerate() {
            let want = table[sel].iter().fold(0u32, |d, &i| d << 8 | u32::from(bytes[i]));
            assert_eq!(*got as u32, want, "prmt.{mode} selector {sel}");
        }
    }
    let (x, y, z) = (randoms(10, 256), randoms(11, 256), randoms(12, 256));
    for lut in [0x00u8, 0xFF, 0xF0, 0xCC, 0xAA, 0x96, 0xE8, 0x80, 0x1E, 0x6A] {
        let out = map(["b32", "b32", "b32", "b32"], &format!("lop3.b32 %d, %a, %b, %c, {lut};"), [&x, &y, &z]);
        for i in 0..x.len() {
            let (a, b, c) = (x[i] as u32, y[i] as u32, z[i] as u32);
            let want = (0..32).fold(0u32, |d, bit| {
                let index = ((a >> bit) & 1) << 2 | ((b >> bit) & 1) << 1 | ((c >> bit) & 1);
                d | u32::from((lut >> index) & 1) << bit
            });
            assert_eq!(out[i] as u32, want, "lop3 {lut:#04x}");
        }
    }
}

#[test]
fn predicates_and_selects() {
    let a: Vec<u64> = (0..8).map(|i| i & 1).collect();
    let b: Vec<u64> = (0..8).map(|i| (i >> 1) & 1).collect();
    let c: Vec<u64> = (0..8).map(|i| (i >> 2) & 1).collect();
    let out = map(["pred", "pred", "pred", "pred"], "and.pred %d, %a, %b; xor.pred %d, %d, %c; not.pred %d, %d;", [&a, &b, &c]);
    for i in 0..8 {
        assert_eq!(out[i], u64::from(((a[i] & b[i]) ^ c[i]) == 0), "{i}");
    }
    let out = map(["pred", "pred", "pred", "pred"], "or.pred %d, %a, %b; @!%c mov.pred %d, 0;", [&a, &b, &c]);
    for i in 0..8 {
        assert_eq!(out[i], (a[i] | b[i]) & c[i], "{i}");
    }
    let out = map(["u32", "u32", "pred", "u32"], "selp.u32 %d, %a, %b, %c;", [&[1, 2], &[3, 4], &[1, 0]]);
    assert_eq!(out, [1, 4]);
    let out = map(["s32", "s32", "s32", "s32"], "slct.s32.s32 %d, %a, %b, %c;", [&[1, 2, 5], &[3, 4, 6], &[0, 0xFFFF_FFFF, 7]]);
    assert_eq!(out, [1, 4, 5]);
    // guards on any instruction, negated or not
    let out =
        map(["u32", "pred", "u32", "u32"], "mov.u32 %d, 9; @%b add.u32 %d, %d, %a; @!%b sub.u32 %d, %d, %a;", [&[1, 1], &[1, 0], &[]]);
    assert_eq!(out, [10, 8]);
}
