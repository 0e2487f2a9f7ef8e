//! Floating-point instructions: round-to-nearest against Rust's IEEE operations, directed
//! roundings against exact references, `.ftz`, `.sat`, min/max NaN rules, unordered
//! comparisons, f16/bf16 arithmetic against the `half` crate, and the approximate family.

mod common;

use common::{f32_bits, f64_bits, map, randoms};
use half::{bf16, f16};

fn f32_of(bits: u64) -> f32 {
    f32::from_bits(bits as u32)
}

/// Random f32 values with 12-bit significands and exponents in ±`spread`: sums, products and
/// (for small spreads) fused results of three are exact in f64.
fn short_floats(seed: u64, n: usize, spread: i32) -> Vec<f32> {
    randoms(seed, n)
        .iter()
        .map(|r| {
            let significand = (r & 0xFFF) as f32 / 4096.0 + 1.0;
            let exponent = ((r >> 12) % (2 * spread as u64 + 1)) as i32 - spread;
            let sign = if r >> 63 == 1 { -1.0 } else { 1.0 };
            sign * significand * 2f32.powi(exponent)
        })
        .collect()
}

/// `x` (exact) rounded to f32 toward zero, down or up.
fn directed(x: f64, mode: &str) -> f32 {
    let r = x as f32;
    let back = f64::from(r);
    match mode {
        "rz" if back.abs() > x.abs() => {
            if x > 0.0 {
                r.next_down()
            } else {
                r.next_up()
            }
        }
        "rm" if back > x => r.next_down(),
        "rp" if back < x => r.next_up(),
        _ => r,
    }
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn round_to_nearest_matches_ieee() {
    let mut a: Vec<f32> = randoms(1, 500).iter().map(|r| f32::from_bits(*r as u32)).collect();
    let mut b: Vec<f32> = randoms(2, 500).iter().map(|r| f32::from_bits((*r >> 32) as u32)).collect();
    let mut c: Vec<f32> = short_floats(3, 500, 30);
    let specials = [0.0, -0.0, 1.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, 1e-45, f32::MAX, 3.0, 0.1];
    for &x in &specials {
        for &y in &specials {
            a.push(x);
            b.push(y);
            c.push(1.5);
        }
    }
    let (ab, bb, cb) = (f32_bits(&a), f32_bits(&b), f32_bits(&c));
    type Ternary = fn(f32, f32, f32) -> f32;
    let ops: [(&str, Ternary); 7] = [
        ("add.rn.f32 %d, %a, %b;", |x, y, _| x + y),
        ("sub.f32 %d, %a, %b;", |x, y, _| x - y),
        ("mul.rn.f32 %d, %a, %b;", |x, y, _| x * y),
        ("fma.rn.f32 %d, %a, %b, %c;", |x, y, z| x.mul_add(y, z)),
        ("div.rn.f32 %d, %a, %b;", |x, y, _| x / y),
        ("sqrt.rn.f32 %d, %a;", |x, _, _| x.sqrt()),
        ("rcp.rn.f32 %d, %a;", |x, _, _| 1.0 / x),
    ];
    for (body, f) in ops {
        let out = map(["f32", "f32", "f32", "f32"], body, [&ab, &bb, &cb]);
        for i in 0..a.len() {
            let want = f(a[i], b[i], c[i]);
            assert!(same(f32_of(out[i]), want), "{body} a={:e} b={:e} c={:e}: got {:e}, want {want:e}", a[i], b[i], c[i], f32_of(out[i]));
            if want.is_nan() {
                assert_eq!(out[i], 0x7FFF_FFFF, "{body}: NaN results are canonical");
            }
        }
    }
    // fma's double-rounding trap: the f64 sum lands exactly on an f32 midpoint
    let (x, y, z) = (1.0f32 + 2f32.powi(-23), 1.0f32 + 2f32.powi(-23), -(2f32.powi(-23)));
    let out = map(["f32", "f32", "f32", "f32"], "fma.rn.f32 %d, %a, %b, %c;", [&f32_bits(&[x]), &f32_bits(&[y]), &f32_bits(&[z])]);
    assert_eq!(f32_of(out[0]), x.mul_add(y, z));
}

#[test]
fn directed_roundings_are_exact() {
    let a = short_floats(4, 400, 20);
    let b = short_floats(5, 400, 20);
    let c = short_floats(6, 400, 8);
    let small = short_floats(7, 400, 8);
    let (ab, bb, cb, sb) = (f32_bits(&a), f32_bits(&b), f32_bits(&c), f32_bits(&small));
    for mode in ["rz", "rm", "rp"] {
        let add = map(["f32", "f32", "f32", "f32"], &format!("add.{mode}.f32 %d, %a, %b;"), [&ab, &bb, &[]]);
        let sub = map(["f32", "f32", "f32", "f32"], &format!("sub.{mode}.f32 %d, %a, %b;"), [&ab, &bb, &[]]);
        let mul = map(["f32", "f32", "f32", "f32"], &format!("mul.{mode}.f32 %d, %a, %b;"), [&ab, &bb, &[]]);
        let fma = map(["f32", "f32", "f32", "f32"], &format!("fma.{mode}.f32 %d, %a, %b, %c;"), [&sb, &cb, &cb]);
        for i in 0..a.len() {
            let (x, y) = (f64::from(a[i]), f64::from(b[i]));
            assert_eq!(f32_of(add[i]), directed(x + y, mode), "add.{mode} {x:e} {y:e}");
            assert_eq!(f32_of(sub[i]), directed(x - y, mode), "sub.{mode} {x:e} {y:e}");
            assert_eq!(f32_of(mul[i]), directed(x * y, mode), "mul.{mode} {x:e} {y:e}");
            let exact = f64::from(small[i]) * f64::from(c[i]) + f64::from(c[i]);
            assert_eq!(f32_of(fma[i]), directed(exact, mode), "fma.{mode} {:e} {:e}", small[i], c[i]);
        }
    }
    // operands far apart: the exact sum is not an f64 value
    let tiny = 2f32.powi(-60);
    let cases = [
        ("add.rz.f32", 1.0, -tiny, 1f32.next_down()),
        ("add.rp.f32", 1.0, tiny, 1f32.next_up()),
        ("add.rm.f32", -1.0, -tiny, -(1f32.next_up())),
        ("add.rn.f32", 1.0, tiny, 1.0),
        ("sub.rm.f32", 1.0, 1.0, -0.0),
        ("sub.rz.f32", 1.0, 1.0, 0.0),
        ("mul.rz.f32", f32::MAX, 2.0, f32::MAX),
        ("mul.rn.f32", f32::MAX, 2.0, f32::INFINITY),
        ("mul.rp.f32", 1e-30, 1e-30, f32::from_bits(1)),
        ("fma.rz.f32", 1.0, -tiny, 1f32.next_down()),
    ];
    for (op, x, y, want) in cases {
        let body = if op.starts_with("fma") { format!("{op} %d, %a, %a, %b;") } else { format!("{op} %d, %a, %b;") };
        let out = map(["f32", "f32", "f32", "f32"], &body, [&f32_bits(&[x]), &f32_bits(&[y]), &[]]);
        assert!(same(f32_of(out[0]), want), "{op} {x:e} {y:e}: got {:e} ({:#x}), want {want:e}", f32_of(out[0]), out[0]);
    }
}

#[test]
fn directed_division_and_square_root_bracket_the_exact_value() {
    let a: Vec<f32> = short_floats(8, 300, 20).iter().map(|v| v.abs()).collect();
    let b: Vec<f32> = short_floats(9, 300, 20).iter().map(|v| v.abs()).collect();
    for mode in ["rz", "rm", "rp"] {
        let div = map(["f32", "f32", "f32", "f32"], &format!("div.{mode}.f32 %d, %a, %b;"), [&f32_bits(&a), &f32_bits(&b), &[]]);
        let sqrt = map(["f32", "f32", "f32", "f32"], &format!("sqrt.{mode}.f32 %d, %a;"), [&f32_bits(&a), &[], &[]]);
        for i in 0..a.len() {
            // q·b and s·s are exact in f64, so each side of the bracket is an exact comparison
            let (x, y) = (f64::from(a[i]), f64::from(b[i]));
            let (q, s) = (f32_of(div[i]), f32_of(sqrt[i]));
            // rz / rm: r·y ≤ x < next_up(r)·y; rp: next_down(r)·y < x ≤ r·y (r·y exact in f64)
            let brackets = |r: f32, scale: &dyn Fn(f32) -> f64| {
                if mode == "rp" {
                    scale(r.next_down()) < x && x <= scale(r)
                } else {
                    scale(r) <= x && x < scale(r.next_up())
                }
            };
            assert!(brackets(q, &|r| f64::from(r) * y), "div.{mode} {x:e}/{y:e} = {q:e}");
            assert!(brackets(s, &|r| f64::from(r) * f64::from(r)), "sqrt.{mode} {x:e} = {s:e}");
        }
    }
}

#[test]
fn f64_arithmetic_in_every_direction() {
    let a: Vec<f64> =
        randoms(10, 300).iter().map(|r| f64::from_bits((r >> 2) | 0x3000_0000_0000_0000) * if r & 1 == 1 { -1.0 } else { 1.0 }).collect();
    let b: Vec<f64> = randoms(11, 300).iter().map(|r| f64::from_bits((r >> 2) | 0x3000_0000_0000_0000)).collect();
    let (ab, bb) = (f64_bits(&a), f64_bits(&b));
    let out = map(["f64", "f64", "f64", "f64"], "fma.rn.f64 %d, %a, %b, %a;", [&ab, &bb, &[]]);
    assert!(out.iter().zip(a.iter().zip(&b)).all(|(&d, (x, y))| d == x.mul_add(*y, *x).to_bits()));
    let out = map(["f64", "f64", "f64", "f64"], "div.rn.f64 %d, %a, %b;", [&ab, &bb, &[]]);
    assert!(out.iter().zip(a.iter().zip(&b)).all(|(&d, (x, y))| d == (x / y).to_bits()));
    for mode in ["rz", "rm", "rp"] {
        let mul = map(["f64", "f64", "f64", "f64"], &format!("mul.{mode}.f64 %d, %a, %b;"), [&ab, &bb, &[]]);
        let add = map(["f64", "f64", "f64", "f64"], &format!("add.{mode}.f64 %d, %a, %b;"), [&ab, &bb, &[]]);
        for i in 0..a.len() {
            // the product's rounding error a·b - r is exact as an FMA; its sign says the direction
            let r = f64::from_bits(mul[i]);
            let err = a[i].mul_add(b[i], -r);
            let ok = match mode {
                "rz" => err == 0.0 || err.signum() == r.signum(),
                "rm" => err >= 0.0,
                _ => err <= 0.0,
            };
            assert!(ok, "mul.{mode}.f64 {:e} {:e} = {r:e} (error {err:e})", a[i], b[i]);
            let s = f64::from_bits(add[i]);
            let nearest = a[i] + b[i];
            assert!(s == nearest || s == nearest.next_up() || s == nearest.next_down(), "add.{mode}.f64");
        }
    }
    let out = map(["f64", "f64", "f64", "f64"], "add.rz.f64 %d, %a, %b;", [&f64_bits(&[1.0]), &f64_bits(&[-(2f64.powi(-80))]), &[]]);
    assert_eq!(f64::from_bits(out[0]), 1f64.next_down());
    let out = map(
        ["f64", "f64", "f64", "f64"],
        "fma.rp.f64 %d, %a, %b, %c;",
        [&f64_bits(&[1.0]), &f64_bits(&[1.0]), &f64_bits(&[2f64.powi(-80)])],
    );
    assert_eq!(f64::from_bits(out[0]), 1f64.next_up());
}

#[test]
fn ftz_flushes_inputs_and_results_and_sat_clamps() {
    let sub = f32::from_bits(0x0000_1234);
    let a = [sub, -sub, 1e-20, 2.0, f32::NAN, -3.0, 0.25];
    let b = [0.0, -0.0, -1e-20, 0.5, 1.0, 1.0, 0.25];
    let out = map(["f32", "f32", "f32", "f32"], "add.ftz.f32 %d, %a, %b;", [&f32_bits(&a), &f32_bits(&b), &[]]);
    assert_eq!(out[0], 0);
    assert_eq!(out[1], 0x8000_0000, "-sub flushes to -0, and -0 + -0 = -0");
    let out = map(["f32", "f32", "f32", "f32"], "mul.ftz.f32 %d, %a, %b;", [&f32_bits(&a), &f32_bits(&b), &[]]);
    assert_eq!(out[2], 0x8000_0000, "a subnormal product flushes to -0");
    let out = map(["f32", "f32", "f32", "f32"], "mul.f32 %d, %a, %b;", [&f32_bits(&a), &f32_bits(&b), &[]]);
    assert_eq!(f32_of(out[2]), 1e-20f32 * -1e-20f32, "without .ftz subnormals stay");
    let out = map(["f32", "f32", "f32", "f32"], "add.sat.f32 %d, %a, %b;", [&f32_bits(&a), &f32_bits(&b), &[]]);
    assert_eq!(out.iter().map(|&v| f32_of(v)).collect::<Vec<_>>()[3..], [1.0, 0.0, 0.0, 0.5]);
    let out = map(["f32", "f32", "f32", "f32"], "fma.rn.ftz.sat.f32 %d, %a, %b, %b;", [&f32_bits(&a), &f32_bits(&b), &[]]);
    assert_eq!(f32_of(out[6]), 0.3125);
}

#[test]
fn min_max_nan_rules_and_signed_zeros() {
    let nan = f32::NAN;
    let a = [1.0, nan, nan, -0.0, 0.0, -2.0];
    let b = [2.0, 3.0, nan, 0.0, -0.0, f32::NEG_INFINITY];
    let run = |body: &str| {
        map(["f32", "f32", "f32", "f32"], body, [&f32_bits(&a), &f32_bits(&b), &[]]).into_iter().map(f32_of).collect::<Vec<_>>()
    };
    let max = run("max.f32 %d, %a, %b;");
    let min = run("min.f32 %d, %a, %b;");
    let max_nan = run("max.NaN.f32 %d, %a, %b;");
    assert_eq!((max[0], max[1], min[1], max[5], min[5]), (2.0, 3.0, 3.0, -2.0, f32::NEG_INFINITY));
    assert!(max[2].is_nan() && max_nan[1].is_nan() && max_nan[0] == 2.0);
    assert_eq!((max[3].to_bits(), max[4].to_bits(), min[3].to_bits(), min[4].to_bits()), (0, 0, 0x8000_0000, 0x8000_0000));
    let out = map(["f64", "f64", "f64", "f64"], "min.f64 %d, %a, %b;", [&f64_bits(&[f64::NAN, 1.0]), &f64_bits(&[4.0, -1.0]), &[]]);
    assert_eq!(out, f64_bits(&[4.0, -1.0]));
}

#[test]
fn comparisons_ordered_and_unordered() {
    let values = [f32::NAN, -1.0, 0.0, -0.0, 1.0, f32::INFINITY];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for &x in &values {
        for &y in &values {
            a.push(x);
            b.push(y);
        }
    }
    type Cmp = fn(f32, f32) -> bool;
    let unordered = |x: f32, y: f32| x.is_nan() || y.is_nan();
    let ops: [(&str, Cmp); 14] = [
        ("eq", |x, y| x == y),
        ("ne", |x, y| !(x.is_nan() || y.is_nan()) && x != y),
        ("lt", |x, y| x < y),
        ("le", |x, y| x <= y),
        ("gt", |x, y| x > y),
        ("ge", |x, y| x >= y),
        ("equ", |x, y| x.is_nan() || y.is_nan() || x == y),
        ("neu", |x, y| x != y),
        ("ltu", |x, y| x.is_nan() || y.is_nan() || x < y),
        ("leu", |x, y| x.is_nan() || y.is_nan() || x <= y),
        ("gtu", |x, y| x.is_nan() || y.is_nan() || x > y),
        ("geu", |x, y| x.is_nan() || y.is_nan() || x >= y),
        ("num", |x, y| !(x.is_nan() || y.is_nan())),
        ("nan", |x, y| x.is_nan() || y.is_nan()),
    ];
    for (cmp, f) in ops {
        let out = map(["f32", "f32", "f32", "pred"], &format!("setp.{cmp}.f32 %d, %a, %b;"), [&f32_bits(&a), &f32_bits(&b), &[]]);
        for i in 0..a.len() {
            assert_eq!(out[i] == 1, f(a[i], b[i]), "setp.{cmp} {} {} (unordered: {})", a[i], b[i], unordered(a[i], b[i]));
        }
    }
    // combined with a predicate, and the complement in the second destination
    let body = ".reg .pred %q; setp.lt.or.f32 %q|%d, %a, %b, %c;";
    let out = map(["f32", "f32", "pred", "pred"], body, [&f32_bits(&[1.0, 2.0, 2.0]), &f32_bits(&[2.0, 1.0, 1.0]), &[0, 0, 1]]);
    assert_eq!(out, [0, 1, 1]);
    let out = map(["s32", "s32", "pred", "pred"], "setp.gt.and.s32 %d, %a, %b, !%c;", [&[5, 5, 0xFFFF_FFFF], &[3, 3, 0], &[0, 1, 0]]);
    assert_eq!(out, [1, 0, 0]);
    let out = map(["u32", "u32", "u32", "pred"], "setp.hi.u32 %d, %a, %b;", [&[0xFFFF_FFFF, 1], &[0, 2], &[]]);
    assert_eq!(out, [1, 0]);
}

#[test]
fn classification_sign_and_magnitude() {
    let a = [1.0, f32::from_bits(5), f32::INFINITY, f32::NAN, 0.0, -2.5];
    let bits = f32_bits(&a);
    let test = |op: &str| map(["f32", "f32", "f32", "pred"], &format!("testp.{op}.f32 %d, %a;"), [&bits, &[], &[]]);
    assert_eq!(test("finite"), [1, 1, 0, 0, 1, 1]);
    assert_eq!(test("infinite"), [0, 0, 1, 0, 0, 0]);
    assert_eq!(test("number"), [1, 1, 1, 0, 1, 1]);
    assert_eq!(test("notanumber"), [0, 0, 0, 1, 0, 0]);
    assert_eq!(test("normal"), [1, 0, 0, 0, 0, 1]);
    assert_eq!(test("subnormal"), [0, 1, 0, 0, 0, 0]);
    let out = map(["f32", "f32", "f32", "f32"], "copysign.f32 %d, %a, %b;", [&f32_bits(&[-1.0, 1.0]), &f32_bits(&[3.0, -4.0]), &[]]);
    assert_eq!(out, f32_bits(&[-3.0, 4.0]));
    let out = map(["f32", "f32", "f32", "f32"], "abs.f32 %d, %a;", [&bits, &[], &[]]);
    assert_eq!(f32_of(out[5]), 2.5);
    let out = map(["f32", "f32", "f32", "f32"], "neg.ftz.f32 %d, %a;", [&bits, &[], &[]]);
    assert_eq!((out[1], f32_of(out[0])), (0x8000_0000, -1.0));
}

#[test]
fn approximate_instructions_are_accurate_and_keep_the_special_cases() {
    let xs: Vec<f32> = (-40..40).map(|i| i as f32 * 0.37).collect();
    let bits = f32_bits(&xs);
    let close = |got: f32, want: f64| {
        let want = want as f32;
        same(got, want) || (got.to_bits() as i64 - want.to_bits() as i64).abs() <= 1
    };
    type Unary = fn(f64) -> f64;
    let unary: [(&str, Unary); 6] = [
        ("ex2.approx.ftz.f32", f64::exp2),
        ("lg2.approx.f32", f64::log2),
        ("rsqrt.approx.f32", |x| 1.0 / x.sqrt()),
        ("sin.approx.f32", f64::sin),
        ("cos.approx.ftz.f32", f64::cos),
        ("tanh.approx.f32", f64::tanh),
    ];
    for (op, f) in unary {
        let out = map(["f32", "f32", "f32", "f32"], &format!("{op} %d, %a;"), [&bits, &[], &[]]);
        for (x, got) in xs.iter().zip(&out) {
            assert!(close(f32_of(*got), f(f64::from(*x))), "{op}({x}) = {}", f32_of(*got));
        }
    }
    let specials = f32_bits(&[f32::NEG_INFINITY, f32::INFINITY, 0.0, -1.0, f32::from_bits(3), -0.0]);
    let run = |op: &str| {
        map(["f32", "f32", "f32", "f32"], &format!("{op} %d, %a;"), [&specials, &[], &[]]).into_iter().map(f32_of).collect::<Vec<_>>()
    };
    let ex2 = run("ex2.approx.ftz.f32");
    assert_eq!((ex2[0].to_bits(), ex2[1], ex2[2], ex2[4]), (0, f32::INFINITY, 1.0, 1.0));
    let lg2 = run("lg2.approx.ftz.f32");
    assert_eq!((lg2[1], lg2[2], lg2[4]), (f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY), "ftz: a subnormal is 0");
    assert!(lg2[0].is_nan() && lg2[3].is_nan());
    let rcp = run("rcp.approx.ftz.f32");
    assert_eq!((rcp[2], rcp[5], rcp[1].to_bits()), (f32::INFINITY, f32::NEG_INFINITY, 0));
    let rsqrt = run("rsqrt.approx.f32");
    assert_eq!((rsqrt[2], rsqrt[5]), (f32::INFINITY, f32::NEG_INFINITY));
    let out = map(["f32", "f32", "f32", "f32"], "div.full.f32 %d, %a, %b;", [&f32_bits(&[1.0, 7.0]), &f32_bits(&[3.0, 0.0]), &[]]);
    assert_eq!(out, f32_bits(&[1.0 / 3.0, f32::INFINITY]));
    let out = map(["f64", "f64", "f64", "f64"], "rcp.approx.ftz.f64 %d, %a;", [&f64_bits(&[4.0]), &[], &[]]);
    assert_eq!(out, f64_bits(&[0.25]));
}

#[test]
fn half_precision_arithmetic_matches_the_half_crate() {
    let a: Vec<bf16> = short_floats(12, 200, 6).iter().map(|v| bf16::from_f32(*v)).collect();
    let b: Vec<bf16> = short_floats(13, 200, 6).iter().map(|v| bf16::from_f32(*v)).collect();
    let bits = |v: &[bf16]| v.iter().map(|x| u64::from(x.to_bits())).collect::<Vec<_>>();
    let out = map(["bf16", "bf16", "bf16", "bf16"], "fma.rn.bf16 %d, %a, %b, %a;", [&bits(&a), &bits(&b), &[]]);
    for i in 0..a.len() {
        let exact = a[i].to_f64() * b[i].to_f64() + a[i].to_f64();
        assert_eq!(out[i] as u16, bf16::from_f64(exact).to_bits(), "fma.rn.bf16 {} {}", a[i], b[i]);
    }
    let h: Vec<f16> = short_floats(14, 200, 4).iter().map(|v| f16::from_f32(*v)).collect();
    let g: Vec<f16> = short_floats(15, 200, 4).iter().map(|v| f16::from_f32(*v)).collect();
    let pairs =
        |lo: &[f16], hi: &[f16]| lo.iter().zip(hi).map(|(l, h)| u64::from(l.to_bits()) | u64::from(h.to_bits()) << 16).collect::<Vec<_>>();
    let (x, y) = (pairs(&h, &g), pairs(&g, &h));
    let out = map(["f16x2", "f16x2", "f16x2", "f16x2"], "add.rn.f16x2 %d, %a, %b;", [&x, &y, &[]]);
    for i in 0..h.len() {
        let sum = f16::from_f64(h[i].to_f64() + g[i].to_f64()).to_bits();
        assert_eq!((out[i] as u16, (out[i] >> 16) as u16), (sum, sum), "add.rn.f16x2 {} {}", h[i], g[i]);
    }
    let out = map(["f16", "f16", "f16", "f16"], "mul.rz.f16 %d, %a, %b;", [&bits16(&h), &bits16(&g), &[]]);
    for i in 0..h.len() {
        let exact = h[i].to_f64() * g[i].to_f64();
        let r = f16::from_f64(exact);
        let want = if r.to_f64().abs() > exact.abs() { f16::from_bits(r.to_bits() - 1) } else { r };
        assert_eq!(out[i] as u16, want.to_bits(), "mul.rz.f16 {} {}", h[i], g[i]);
    }
}

fn bits16(v: &[f16]) -> Vec<u64> {
    v.iter().map(|x| u64::from(x.to_bits())).collect()
}
