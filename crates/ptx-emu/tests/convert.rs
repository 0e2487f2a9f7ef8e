//! `cvt` between integer and float types (rounding modes, saturation, `.ftz`), bf16 and f16
//! against the `half` crate, packed conversions, and `mov` packing and unpacking.

mod common;

use common::{f32_bits, f64_bits, map, randoms};
use half::{bf16, f16};

fn f32_of(bits: u64) -> f32 {
    f32::from_bits(bits as u32)
}

#[test]
fn float_to_integer_rounds_and_saturates() {
    let xs = [2.5f32, -2.5, 3.5, -0.5, 1.9999, -7.2, 1e10, -1e10, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 4294967040.0];
    let bits = f32_bits(&xs);
    type Rounding = fn(f32) -> f32;
    let modes: [(&str, Rounding); 4] = [("rni", f32::round_ties_even), ("rzi", f32::trunc), ("rmi", f32::floor), ("rpi", f32::ceil)];
    for (mode, round) in modes {
        let s32 = map(["f32", "f32", "f32", "s32"], &format!("cvt.{mode}.s32.f32 %d, %a;"), [&bits, &[], &[]]);
        let u32_ = map(["f32", "f32", "f32", "u32"], &format!("cvt.{mode}.u32.f32 %d, %a;"), [&bits, &[], &[]]);
        let s64 = map(["f32", "f32", "f32", "s64"], &format!("cvt.{mode}.s64.f32 %d, %a;"), [&bits, &[], &[]]);
        let u8_ = map(["f32", "f32", "f32", "u8"], &format!("cvt.{mode}.u8.f32 %d, %a;"), [&bits, &[], &[]]);
        for (i, &x) in xs.iter().enumerate() {
            // Rust's `as` saturates and maps NaN to 0, as PTX does
            let r = round(x);
            assert_eq!(s32[i] as i32, r as i32, "cvt.{mode}.s32 {x}");
            assert_eq!(u32_[i] as u32, r as u32, "cvt.{mode}.u32 {x}");
            assert_eq!(s64[i] as i64, r as i64, "cvt.{mode}.s64 {x}");
            assert_eq!(u8_[i] as u8, r as u8, "cvt.{mode}.u8 {x}");
        }
    }
    let out = map(
        ["f64", "f64", "f64", "u64"],
        "cvt.rzi.u64.f64 %d, %a;",
        [&f64_bits(&[1.8446744073709552e19, 1e30, -1.0, 9007199254740993.0]), &[], &[]],
    );
    assert_eq!(out, [u64::MAX, u64::MAX, 0, 9007199254740992]);
    let out = map(["f32", "f32", "f32", "s32"], "cvt.rpi.ftz.s32.f32 %d, %a;", [&f32_bits(&[f32::from_bits(1)]), &[], &[]]);
    assert_eq!(out, [0], ".ftz: a subnormal is zero before rounding up");
    let out = map(["f32", "f32", "f32", "s32"], "cvt.rpi.s32.f32 %d, %a;", [&f32_bits(&[f32::from_bits(1)]), &[], &[]]);
    assert_eq!(out, [1]);
}

#[test]
fn integer_to_float_in_every_direction() {
    let big = [u64::MAX, (1 << 53) + 1, (1 << 24) + 1, 0x7FFF_FFFF_FFFF_FDFF, 12345, 0];
    for mode in ["rn", "rz", "rm", "rp"] {
        let out = map(["u64", "u64", "u64", "f32"], &format!("cvt.{mode}.f32.u64 %d, %a;"), [&big, &[], &[]]);
        for (i, &v) in big.iter().enumerate() {
            let got = f32_of(out[i]);
            // the result brackets v; for an integer v, v < f ⇔ v < ceil(f) and f < v ⇔ floor(f) < v
            let (ceil, floor) = (|f: f32| f64::from(f).ceil() as i128, |f: f32| f64::from(f).floor() as i128);
            let v128 = i128::from(v);
            match mode {
                "rn" => assert_eq!(got, v as f32, "rn {v}"),
                "rz" | "rm" => {
                    assert!(floor(got) <= v128 && v128 < ceil(got.next_up()) && f64::from(got).fract() == 0.0, "{mode} {v} -> {got}")
                }
                _ => assert!(floor(got.next_down()) < v128 && v128 <= ceil(got) && f64::from(got).fract() == 0.0, "rp {v} -> {got}"),
            }
        }
    }
    let signed = [-1i64 as u64, i64::MIN as u64, -16777217i64 as u64];
    let out = map(["s64", "s64", "s64", "f32"], "cvt.rz.f32.s64 %d, %a;", [&signed, &[], &[]]);
    assert_eq!(out.iter().map(|&b| f32_of(b)).collect::<Vec<_>>(), [-1.0, -9.223372e18, -16777216.0]);
    let out = map(["s32", "s32", "s32", "f64"], "cvt.rn.f64.s32 %d, %a;", [&[0xFFFF_FFFF, 7], &[], &[]]);
    assert_eq!(out, f64_bits(&[-1.0, 7.0]));
    let out = map(["u32", "u32", "u32", "f32"], "cvt.rn.f32.u32 %d, %a;", [&[16777217, 0xFFFF_FFFF], &[], &[]]);
    assert_eq!(out, f32_bits(&[16777216.0, 4294967296.0]));
}

#[test]
fn integer_to_integer_truncates_or_saturates() {
    let v = [0xFFFF_FF80u64, 0x0000_0180, 0x8000_0000, 0x7FFF_FFFF];
    let out = map(["s32", "s32", "s32", "s8"], "cvt.s8.s32 %d, %a;", [&v, &[], &[]]);
    assert_eq!(out.iter().map(|&x| x as u8 as i8).collect::<Vec<_>>(), [-128, -128, 0, -1]);
    let out = map(["s32", "s32", "s32", "s8"], "cvt.sat.s8.s32 %d, %a;", [&v, &[], &[]]);
    assert_eq!(out.iter().map(|&x| x as u8 as i8).collect::<Vec<_>>(), [-128, 127, -128, 127]);
    let out = map(["s32", "s32", "s32", "u16"], "cvt.sat.u16.s32 %d, %a;", [&v, &[], &[]]);
    assert_eq!(out, [0, 0x180, 0, 0xFFFF]);
    let out = map(["s32", "s32", "s32", "s64"], "cvt.s64.s32 %d, %a;", [&v, &[], &[]]);
    assert_eq!(out[0], 0xFFFF_FFFF_FFFF_FF80, "sign extension");
    let out = map(["u32", "u32", "u32", "u64"], "cvt.u64.u32 %d, %a;", [&v, &[], &[]]);
    assert_eq!(out[0], 0xFFFF_FF80);
    let out = map(["s16", "s16", "s16", "s32"], "cvt.s32.s16 %d, %a;", [&[0x8001], &[], &[]]);
    assert_eq!(out, [0xFFFF_8001]);
    let out = map(["u64", "u64", "u64", "u32"], "cvt.u32.u64 %d, %a;", [&[0x1_2345_6789], &[], &[]]);
    assert_eq!(out, [0x2345_6789]);
}

#[test]
fn bf16_and_f16_conversions_match_the_half_crate() {
    let mut xs: Vec<f32> = randoms(1, 2000).iter().map(|r| f32::from_bits(*r as u32)).collect();
    xs.extend([0.0, -0.0, f32::INFINITY, f32::MAX, 1e-40, 65504.0, 65520.0, 1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-9)]);
    let bits = f32_bits(&xs);
    let to_bf16 = map(["f32", "f32", "f32", "bf16"], "cvt.rn.bf16.f32 %d, %a;", [&bits, &[], &[]]);
    let to_f16 = map(["f32", "f32", "f32", "f16"], "cvt.rn.f16.f32 %d, %a;", [&bits, &[], &[]]);
    for (i, &x) in xs.iter().enumerate() {
        if x.is_nan() {
            assert_eq!((to_bf16[i], to_f16[i]), (0x7FFF, 0x7FFF), "canonical NaN for {:#x}", x.to_bits());
            continue;
        }
        assert_eq!(to_bf16[i] as u16, bf16::from_f32(x).to_bits(), "cvt.rn.bf16.f32 {x:e}");
        assert_eq!(to_f16[i] as u16, f16::from_f32(x).to_bits(), "cvt.rn.f16.f32 {x:e}");
    }
    let back = map(["bf16", "bf16", "bf16", "f32"], "cvt.f32.bf16 %d, %a;", [&to_bf16, &[], &[]]);
    let back16 = map(["f16", "f16", "f16", "f32"], "cvt.f32.f16 %d, %a;", [&to_f16, &[], &[]]);
    for i in 0..xs.len() {
        assert!(f32_of(back[i]).to_bits() == bf16::from_bits(to_bf16[i] as u16).to_f32().to_bits() || f32_of(back[i]).is_nan());
        assert!(f32_of(back16[i]).to_bits() == f16::from_bits(to_f16[i] as u16).to_f32().to_bits() || f32_of(back16[i]).is_nan());
    }
    // directed, relu and the packed form (a to the high half)
    let out = map(["f32", "f32", "f32", "bf16"], "cvt.rz.bf16.f32 %d, %a;", [&f32_bits(&[1.0 + 255.0 / 256.0 * 2f32.powi(-7)]), &[], &[]]);
    assert_eq!(out, [0x3F80]);
    let out = map(["f32", "f32", "f32", "bf16"], "cvt.rn.relu.bf16.f32 %d, %a;", [&f32_bits(&[-3.0, 2.0]), &[], &[]]);
    assert_eq!(out, [0, 0x4000]);
    let out = map(["f32", "f32", "f32", "bf16x2"], "cvt.rn.bf16x2.f32 %d, %a, %b;", [&f32_bits(&[1.0]), &f32_bits(&[-2.0]), &[]]);
    assert_eq!(out, [0x3F80_C000]);
    let out = map(["f32", "f32", "f32", "f16x2"], "cvt.rn.f16x2.f32 %d, %a, %b;", [&f32_bits(&[1.0]), &f32_bits(&[0.5]), &[]]);
    assert_eq!(out, [0x3C00_3800]);
}

#[test]
fn float_to_float_rounding_and_saturation() {
    let values = [1.0 / 3.0, -1.0 / 3.0, 1e39, 1e-50, 2.5];
    let bits = f64_bits(&values);
    for (mode, want) in [
        ("rn", [1.0f32 / 3.0, -1.0 / 3.0, f32::INFINITY, 0.0, 2.5]),
        ("rz", [0.3333333f32, -0.3333333, f32::MAX, 0.0, 2.5]),
        ("rm", [0.3333333f32, -0.33333334, f32::MAX, 0.0, 2.5]),
        ("rp", [0.33333334f32, -0.3333333, f32::INFINITY, f32::from_bits(1), 2.5]),
    ] {
        let out = map(["f64", "f64", "f64", "f32"], &format!("cvt.{mode}.f32.f64 %d, %a;"), [&bits, &[], &[]]);
        assert_eq!(out.iter().map(|&b| f32_of(b)).collect::<Vec<_>>(), want, "cvt.{mode}.f32.f64");
    }
    let xs = f32_bits(&[2.5, -0.7, 1.5, f32::NAN]);
    let out = map(["f32", "f32", "f32", "f32"], "cvt.rni.f32.f32 %d, %a;", [&xs, &[], &[]]);
    assert_eq!(out[..3], f32_bits(&[2.0, -1.0, 2.0]));
    let out = map(["f32", "f32", "f32", "f32"], "cvt.rmi.f32.f32 %d, %a;", [&xs, &[], &[]]);
    assert_eq!(out[..3], f32_bits(&[2.0, -1.0, 1.0]));
    let out = map(["f32", "f32", "f32", "f32"], "cvt.sat.f32.f32 %d, %a;", [&xs, &[], &[]]);
    assert_eq!(out, f32_bits(&[1.0, 0.0, 1.0, 0.0]));
    let out = map(["f32", "f32", "f32", "f64"], "cvt.f64.f32 %d, %a;", [&f32_bits(&[0.1]), &[], &[]]);
    assert_eq!(out, f64_bits(&[f64::from(0.1f32)]));
}

#[test]
fn mov_packs_and_unpacks_vector_operands() {
    let body = ".reg .b16 %lo, %hi; mov.b32 {%lo, %hi}, %a; mov.b32 %d, {%hi, %lo};";
    let out = map(["b32", "b32", "b32", "b32"], body, [&[0x1234_5678], &[], &[]]);
    assert_eq!(out, [0x5678_1234]);
    // the bf16-to-f32 idiom of cuda_bf16.h: an immediate low half
    let body = ".reg .b16 %h; cvt.u16.u32 %h, %a; mov.b32 %d, {0, %h};";
    let out = map(["u32", "u32", "u32", "f32"], body, [&[0x3FC0], &[], &[]]);
    assert_eq!(f32_of(out[0]), 1.5);
    let body = ".reg .b32 %x, %y; mov.b64 {%x, %y}, %a; mov.b64 %d, {%y, %x};";
    let out = map(["b64", "b64", "b64", "b64"], body, [&[0xAAAA_BBBB_CCCC_DDDD], &[], &[]]);
    assert_eq!(out, [0xCCCC_DDDD_AAAA_BBBB]);
}
