//! NVRTC 12.4 output (`tests/nvrtc/*.ptx`, from the `.cu` files beside them; see the README
//! there) on the emulator against Rust references. Results that went through NVRTC's inlined
//! `expf` / `logf` / `powf` / `erff` / `tanhf` / `rsqrtf` (built on `ex2.approx` and friends)
//! are compared within a few ulp; everything else exactly.

mod common;

use common::{bytes_of_f32, f32s, randoms, u32s};
use half::bf16;
use ptx_emu::{Arg, LaunchConfig, Memory, Module};

fn fixture(name: &str) -> Module {
    let path = format!("{}/tests/nvrtc/{name}.ptx", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Module::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn launch(grid: u32, block: u32) -> LaunchConfig {
    LaunchConfig { grid: [grid, 1, 1], block: [block, 1, 1], dynamic_shared_bytes: 0 }
}

/// Values in [-scale, scale).
fn uniform(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    randoms(seed, n).iter().map(|r| ((r >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale).collect()
}

/// An input buffer holding `bytes`, and an output buffer of `bytes_out` nothing has written.
fn input(mem: &mut Memory, bytes: &[u8]) -> u64 {
    let addr = mem.alloc(bytes.len()).unwrap();
    mem.write(addr, bytes).unwrap();
    addr
}

fn rel_err(got: f64, want: f64) -> f64 {
    if got == want {
        0.0
    } else {
        (got - want).abs() / want.abs().max(1e-30)
    }
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes()).collect()
}

fn bf16s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks(2).map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect()
}

#[test]
fn softmax_log_softmax_and_scans_over_rows() {
    let m = fixture("softmax");
    let (rows, cols) = (5usize, 300usize);
    let x = uniform(1, rows * cols, 8.0);
    let mut mem = Memory::new();
    let xa = input(&mut mem, &bytes_of_f32(&x));
    let y = mem.alloc(4 * rows * cols).unwrap();
    m.launch(&mut mem, "softmax_rows_f32", launch(rows as u32, 128), &[Arg::U64(xa), Arg::U64(y), Arg::I32(cols as i32)]).unwrap();
    let got = f32s(&mem.read(y, 4 * rows * cols).unwrap());
    for (r, row) in x.chunks(cols).enumerate() {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        for c in 0..cols {
            let want = (f64::from(row[c]) - max).exp() / sum;
            assert!(rel_err(f64::from(got[r * cols + c]), want) < 2e-6, "softmax[{r}][{c}] = {} vs {want}", got[r * cols + c]);
        }
    }

    let (rows, cols) = (3usize, 77usize);
    let x: Vec<f32> = uniform(2, rows * cols, 4.0).iter().map(|v| bf16::from_f32(*v).to_f32()).collect();
    let xa = input(&mut mem, &bf16_bytes(&x));
    let y = mem.alloc(2 * rows * cols).unwrap();
    m.launch(&mut mem, "log_softmax_rows_bf16", launch(rows as u32, 64), &[Arg::U64(xa), Arg::U64(y), Arg::I32(cols as i32)]).unwrap();
    let got = bf16s(&mem.read(y, 2 * rows * cols).unwrap());
    for (r, row) in x.chunks(cols).enumerate() {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let log_sum = row.iter().map(|&v| (f64::from(v) - max).exp()).sum::<f64>().ln();
        for c in 0..cols {
            let want = f64::from(row[c]) - max - log_sum;
            assert!(
                (f64::from(got[r * cols + c]) - want).abs() <= want.abs() / 256.0 + 1e-6,
                "log_softmax[{r}][{c}] = {} vs {want}",
                got[r * cols + c]
            );
        }
    }

    let (rows, cols) = (6usize, 70usize);
    let x = uniform(3, rows * cols, 1.0);
    let xa = input(&mut mem, &bytes_of_f32(&x));
    let (y, negatives) = (mem.alloc(4 * rows * cols).unwrap(), mem.alloc(4 * rows).unwrap());
    let args = [Arg::U64(xa), Arg::U64(y), Arg::U64(negatives), Arg::I32(rows as i32), Arg::I32(cols as i32)];
    m.launch(&mut mem, "cumsum_rows_f32", launch(3, 64), &args).unwrap();
    let (got, counts) = (f32s(&mem.read(y, 4 * rows * cols).unwrap()), u32s(&mem.read(negatives, 4 * rows).unwrap()));
    for (r, row) in x.chunks(cols).enumerate() {
        assert_eq!(counts[r] as usize, row.iter().filter(|v| **v < 0.0).count(), "negatives in row {r}");
        let mut sum = 0.0f64;
        for c in 0..cols {
            sum += f64::from(row[c]);
            assert!((f64::from(got[r * cols + c]) - sum).abs() < 1e-5, "cumsum[{r}][{c}] = {} vs {sum}", got[r * cols + c]);
        }
    }
}

#[test]
fn layer_norm_forward() {
    let m = fixture("layernorm");
    let (rows, cols, eps) = (4usize, 200usize, 1e-5f32);
    let x = uniform(4, rows * cols, 3.0);
    let gamma = uniform(5, cols, 1.0);
    let beta = uniform(6, cols, 0.5);
    let mut mem = Memory::new();
    let (xa, ga, ba) = (input(&mut mem, &bytes_of_f32(&x)), input(&mut mem, &bytes_of_f32(&gamma)), input(&mut mem, &bytes_of_f32(&beta)));
    let (y, mean, rstd) = (mem.alloc(4 * rows * cols).unwrap(), mem.alloc(4 * rows).unwrap(), mem.alloc(4 * rows).unwrap());
    let args =
        [Arg::U64(xa), Arg::U64(ga), Arg::U64(ba), Arg::U64(y), Arg::U64(mean), Arg::U64(rstd), Arg::I32(cols as i32), Arg::F32(eps)];
    m.launch(&mut mem, "layer_norm_f32", launch(rows as u32, 128), &args).unwrap();
    let (got, means, rstds) =
        (f32s(&mem.read(y, 4 * rows * cols).unwrap()), f32s(&mem.read(mean, 4 * rows).unwrap()), f32s(&mem.read(rstd, 4 * rows).unwrap()));
    for (r, row) in x.chunks(cols).enumerate() {
        let mu = row.iter().map(|&v| f64::from(v)).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (f64::from(v) - mu).powi(2)).sum::<f64>() / cols as f64;
        let inv = 1.0 / (var + f64::from(eps)).sqrt();
        assert!((f64::from(means[r]) - mu).abs() < 1e-6 && rel_err(f64::from(rstds[r]), inv) < 1e-5, "row {r} statistics");
        for c in 0..cols {
            let want = (f64::from(row[c]) - mu) * inv * f64::from(gamma[c]) + f64::from(beta[c]);
            assert!((f64::from(got[r * cols + c]) - want).abs() < 1e-5, "y[{r}][{c}] = {} vs {want}", got[r * cols + c]);
        }
    }
}

#[test]
fn broadcasting_binary_ops_through_a_strided_index_map() {
    let m = fixture("broadcast");
    let sizes = [3i64, 4, 5, 7];
    // a: [3, 1, 5, 7] broadcast over dim 1; b: [4, 7] broadcast over dims 0 and 2
    let (a_strides, b_strides) = ([35i64, 0, 7, 1], [0i64, 7, 0, 1]);
    let total: i64 = sizes.iter().product();
    let a = uniform(7, 105, 4.0);
    let b: Vec<f32> = uniform(8, 28, 4.0).iter().map(|v| if v.abs() < 0.1 { 0.5 } else { *v }).collect();
    let mut shape = vec![0u8; 104];
    shape[..4].copy_from_slice(&4i32.to_le_bytes());
    for (k, v) in sizes.iter().chain(&a_strides).chain(&b_strides).enumerate() {
        shape[8 + 8 * k..16 + 8 * k].copy_from_slice(&v.to_le_bytes());
    }
    assert_eq!(m.params("broadcast_binary_f32").unwrap()[3].bytes, shape.len());
    let mut mem = Memory::new();
    let (aa, ba) = (input(&mut mem, &bytes_of_f32(&a)), input(&mut mem, &bytes_of_f32(&b)));
    let out = mem.alloc(4 * total as usize).unwrap();
    let ops: [fn(f32, f32) -> f32; 4] = [|x, y| x + y, |x, y| x * y, |x, y| x / y, f32::max];
    for (op, f) in ops.iter().enumerate() {
        let args = [Arg::U64(aa), Arg::U64(ba), Arg::U64(out), Arg::Bytes(shape.clone()), Arg::I64(total), Arg::I32(op as i32)];
        m.launch(&mut mem, "broadcast_binary_f32", launch(2, 64), &args).unwrap();
        let got = f32s(&mem.read(out, 4 * total as usize).unwrap());
        for i in 0..total {
            let (d0, d1, d2, d3) = (i / 140, i / 35 % 4, i / 7 % 5, i % 7);
            let ia = (d0 * 35 + d2 * 7 + d3) as usize;
            let ib = (d1 * 7 + d3) as usize;
            assert_eq!(got[i as usize], f(a[ia], b[ib]), "op {op} at {i}");
        }
    }
}

#[test]
fn adamw_and_nesterov_updates() {
    let m = fixture("adamw");
    let n = 1000usize;
    let (param, grad) = (uniform(9, n, 1.0), uniform(10, n, 0.1));
    let (m1, v1): (Vec<f32>, Vec<f32>) = (uniform(11, n, 0.01), uniform(12, n, 1e-3).iter().map(|v| v.abs()).collect());
    let (lr, beta1, beta2, eps, decay, step) = (1e-3f32, 0.9f32, 0.999f32, 1e-8f32, 0.05f32, 3i32);
    let mut mem = Memory::new();
    let pa = input(&mut mem, &bytes_of_f32(&param));
    let ga = input(&mut mem, &bytes_of_f32(&grad));
    let ma = input(&mut mem, &bytes_of_f32(&m1));
    let va = input(&mut mem, &bytes_of_f32(&v1));
    let half = mem.alloc(2 * n).unwrap();
    let args = [
        Arg::U64(pa),
        Arg::U64(ga),
        Arg::U64(ma),
        Arg::U64(va),
        Arg::U64(half),
        Arg::I32(n as i32),
        Arg::F32(lr),
        Arg::F32(beta1),
        Arg::F32(beta2),
        Arg::F32(eps),
        Arg::F32(decay),
        Arg::I32(step),
    ];
    m.launch(&mut mem, "adamw_f32", launch(3, 128), &args).unwrap();
    let (p, h) = (f32s(&mem.read(pa, 4 * n).unwrap()), bf16s(&mem.read(half, 2 * n).unwrap()));
    let (lr, beta1, beta2) = (f64::from(lr), f64::from(beta1), f64::from(beta2));
    for i in 0..n {
        let g = f64::from(grad[i]);
        let mi = beta1 * f64::from(m1[i]) + (1.0 - beta1) * g;
        let vi = beta2 * f64::from(v1[i]) + (1.0 - beta2) * g * g;
        let m_hat = mi / (1.0 - beta1.powi(step));
        let v_hat = vi / (1.0 - beta2.powi(step));
        let want = f64::from(param[i]) * (1.0 - lr * f64::from(decay)) - lr * m_hat / (v_hat.sqrt() + f64::from(eps));
        assert!((f64::from(p[i]) - want).abs() < 1e-6, "param[{i}] = {} vs {want}", p[i]);
        assert_eq!(h[i], bf16::from_f32(p[i]).to_f32(), "bf16 copy of param[{i}]");
    }

    let (w, g, v): (Vec<f64>, Vec<f64>, Vec<f64>) = (0..n).map(|i| (i as f64 * 0.01 - 3.0, (i as f64).sin(), (i as f64 * 0.3).cos())).fold(
        (vec![], vec![], vec![]),
        |mut acc, (a, b, c)| {
            acc.0.push(a);
            acc.1.push(b);
            acc.2.push(c);
            acc
        },
    );
    let f64_bytes = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>();
    let (wa, gb, vb) = (input(&mut mem, &f64_bytes(&w)), input(&mut mem, &f64_bytes(&g)), input(&mut mem, &f64_bytes(&v)));
    m.launch(
        &mut mem,
        "sgd_nesterov_f64",
        launch(4, 256),
        &[Arg::U64(wa), Arg::U64(gb), Arg::U64(vb), Arg::I32(n as i32), Arg::F64(0.1), Arg::F64(0.9)],
    )
    .unwrap();
    let got: Vec<f64> = mem.read(wa, 8 * n).unwrap().chunks(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
    for i in 0..n {
        let vi = 0.9 * v[i] + g[i];
        let want = w[i] - 0.1 * (g[i] + 0.9 * vi);
        assert!((got[i] - want).abs() <= 1e-15 * want.abs().max(1.0), "param[{i}] = {} vs {want}", got[i]);
    }
}

#[test]
fn scatter_add_histogram_bucket_max_and_gather() {
    let m = fixture("scatter");
    let (rows, dim, targets) = (50usize, 16usize, 7usize);
    // halves and small integers: every order of the atomic adds gives the same sum
    let src: Vec<f32> = (0..rows * dim).map(|i| (i % 13) as f32 * 0.5 - 2.0).collect();
    let index: Vec<i32> = (0..rows).map(|r| ((r * 5 + 3) % targets) as i32).collect();
    let mut mem = Memory::new();
    let sa = input(&mut mem, &bytes_of_f32(&src));
    let ia = input(&mut mem, &index.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    let out = mem.alloc(4 * targets * dim).unwrap();
    mem.fill(out, 0, 4 * targets * dim).unwrap();
    let histogram = mem.alloc(4 * targets).unwrap();
    mem.fill(histogram, 0, 4 * targets).unwrap();
    let args = [Arg::U64(sa), Arg::U64(ia), Arg::U64(out), Arg::U64(histogram), Arg::I32(rows as i32), Arg::I32(dim as i32)];
    m.launch(&mut mem, "scatter_add_rows_f32", launch(2, 128), &args).unwrap();
    let (sums, counts) = (f32s(&mem.read(out, 4 * targets * dim).unwrap()), u32s(&mem.read(histogram, 4 * targets).unwrap()));
    for t in 0..targets {
        let mine: Vec<usize> = (0..rows).filter(|&r| index[r] as usize == t).collect();
        assert_eq!(counts[t] as usize, mine.len());
        for c in 0..dim {
            assert_eq!(sums[t * dim + c], mine.iter().map(|&r| src[r * dim + c]).sum::<f32>(), "sum[{t}][{c}]");
        }
    }

    let n = 300usize;
    let values = uniform(13, n, 10.0);
    let buckets: Vec<i32> = (0..n).map(|i| (i * 7 % 11) as i32).collect();
    let va = input(&mut mem, &bytes_of_f32(&values));
    let bb = input(&mut mem, &buckets.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    let maxima = input(&mut mem, &bytes_of_f32(&[f32::NEG_INFINITY; 11]));
    let argmin = input(&mut mem, &i32::MAX.to_le_bytes().repeat(11));
    m.launch(
        &mut mem,
        "bucket_max_f32",
        launch(3, 128),
        &[Arg::U64(va), Arg::U64(bb), Arg::U64(maxima), Arg::U64(argmin), Arg::I32(n as i32)],
    )
    .unwrap();
    let (got_max, got_min) = (f32s(&mem.read(maxima, 44).unwrap()), u32s(&mem.read(argmin, 44).unwrap()));
    for b in 0..11 {
        let members: Vec<usize> = (0..n).filter(|&i| buckets[i] == b as i32).collect();
        assert_eq!(got_max[b], members.iter().map(|&i| values[i]).fold(f32::NEG_INFINITY, f32::max), "bucket {b} max");
        assert_eq!(got_min[b] as usize, members[0], "bucket {b} first index");
    }

    let (table_rows, dim) = (9usize, 12usize);
    let table: Vec<f32> = (0..table_rows * dim).map(|i| i as f32).collect();
    let ids: Vec<i64> = vec![4, 0, 8, 4, 1];
    let ta = input(&mut mem, &bf16_bytes(&table));
    let ida = input(&mut mem, &ids.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    let gathered = mem.alloc(2 * ids.len() * dim).unwrap();
    m.launch(
        &mut mem,
        "gather_rows_bf16",
        launch(1, 32),
        &[Arg::U64(ta), Arg::U64(ida), Arg::U64(gathered), Arg::I32(ids.len() as i32), Arg::I32(dim as i32)],
    )
    .unwrap();
    let got = bf16s(&mem.read(gathered, 2 * ids.len() * dim).unwrap());
    for (r, &id) in ids.iter().enumerate() {
        assert_eq!(got[r * dim..(r + 1) * dim], table[id as usize * dim..(id as usize + 1) * dim], "gathered row {r}");
    }
}

#[test]
fn im2col_col2im_and_max_pooling() {
    let m = fixture("im2col");
    let (channels, height, width, k, pad, stride) = (3usize, 7usize, 6usize, 3usize, 1usize, 2usize);
    let (out_h, out_w) = ((height + 2 * pad - k) / stride + 1, (width + 2 * pad - k) / stride + 1);
    let image: Vec<f32> = (0..channels * height * width).map(|i| (i % 17) as f32 - 8.0).collect();
    let mut mem = Memory::new();
    let xa = input(&mut mem, &bytes_of_f32(&image));
    let col_len = channels * k * k * out_h * out_w;
    let cols = mem.alloc(4 * col_len).unwrap();
    let geometry = |extra: &[i32]| -> Vec<Arg> {
        [channels, height, width, k, k].iter().map(|&v| Arg::I32(v as i32)).chain(extra.iter().map(|&v| Arg::I32(v))).collect()
    };
    let mut args = vec![Arg::U64(xa), Arg::U64(cols)];
    args.extend(geometry(&[pad as i32, stride as i32, 1, out_h as i32, out_w as i32]));
    m.launch(&mut mem, "im2col_f32", launch(1, 32), &args).unwrap();
    let got = f32s(&mem.read(cols, 4 * col_len).unwrap());
    let mut reference = vec![0.0f32; col_len];
    for c in 0..channels {
        for i in 0..k {
            for j in 0..k {
                for oy in 0..out_h {
                    for ox in 0..out_w {
                        let (y, x) = ((oy * stride + i) as i64 - pad as i64, (ox * stride + j) as i64 - pad as i64);
                        let inside = y >= 0 && x >= 0 && (y as usize) < height && (x as usize) < width;
                        reference[(((c * k + i) * k + j) * out_h + oy) * out_w + ox] =
                            if inside { image[(c * height + y as usize) * width + x as usize] } else { 0.0 };
                    }
                }
            }
        }
    }
    assert_eq!(got, reference);
    // col2im is im2col's adjoint: <im2col(x), cols> = <x, col2im(cols)>
    let image_back = mem.alloc(4 * image.len()).unwrap();
    let mut args = vec![Arg::U64(cols), Arg::U64(image_back)];
    args.extend(geometry(&[pad as i32, stride as i32, out_h as i32, out_w as i32]));
    m.launch(&mut mem, "col2im_f32", launch(2, 32), &args).unwrap();
    let back = f32s(&mem.read(image_back, 4 * image.len()).unwrap());
    let lhs: f64 = reference.iter().map(|v| f64::from(*v).powi(2)).sum();
    let rhs: f64 = image.iter().zip(&back).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    assert_eq!(lhs, rhs);

    let (planes, h, w) = (2usize, 6usize, 8usize);
    let x: Vec<f32> = randoms(14, planes * h * w).iter().map(|r| (r % 1000) as f32).collect();
    let xa = input(&mut mem, &bytes_of_f32(&x));
    let (y, argmax) = (mem.alloc(4 * planes * h * w / 4).unwrap(), mem.alloc(planes * h * w / 4).unwrap());
    m.launch(
        &mut mem,
        "max_pool2x2_f32",
        launch(1, 64),
        &[Arg::U64(xa), Arg::U64(y), Arg::U64(argmax), Arg::I32(planes as i32), Arg::I32(h as i32), Arg::I32(w as i32)],
    )
    .unwrap();
    let (pooled, at) = (f32s(&mem.read(y, 4 * planes * h * w / 4).unwrap()), mem.read(argmax, planes * h * w / 4).unwrap());
    for (i, (&best, &index)) in pooled.iter().zip(&at).enumerate() {
        let (ox, oy, plane) = (i % (w / 2), i / (w / 2) % (h / 2), i / (w * h / 4));
        let base = (plane * h + 2 * oy) * w + 2 * ox;
        let window = [x[base], x[base + 1], x[base + w], x[base + w + 1]];
        let first_max = (0..4).fold(0, |b, k| if window[k] > window[b] { k } else { b });
        assert_eq!((best, index as usize), (window[first_max], first_max), "window {i}");
    }
}

#[test]
fn inlined_math_functions_casts_and_a_device_call() {
    let m = fixture("math");
    let mut x = uniform(15, 250, 6.0);
    x.extend([0.0, -0.0, 1e-3, 88.0, -90.0, 2e5, -1.5e6, 3e7, 0.5, 1.0]);
    let n = x.len();
    let mut mem = Memory::new();
    let xa = input(&mut mem, &bytes_of_f32(&x));
    let out = mem.alloc(4 * 10 * n).unwrap();
    m.launch(&mut mem, "unary_math_f32", launch(3, 128), &[Arg::U64(xa), Arg::U64(out), Arg::I32(n as i32)]).unwrap();
    let got = f32s(&mem.read(out, 4 * 10 * n).unwrap());
    // erf by its Maclaurin series: accurate in f64 for |z| < 2.2 (|v| < 3), where GELU is checked
    let erf = |z: f64| {
        let (mut sum, mut term) = (0.0, z);
        for k in 0..60 {
            sum += term / (2 * k + 1) as f64;
            term *= -z * z / (k + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    };
    type Reference = fn(f64, &dyn Fn(f64) -> f64) -> f64;
    let references: [(&str, Reference); 10] = [
        ("expf", |v, _| v.exp()),
        ("logf", |v, _| v.abs().ln()),
        ("gelu", |v, erf| 0.5 * v * (1.0 + erf(v / 2f64.sqrt()))),
        ("tanhf", |v, _| v.tanh()),
        ("powf", |v, _| v.abs().powf(f64::from(1.7f32))), // the kernel raises to 1.7f
        ("sinf", |v, _| v.sin()),
        ("cosf", |v, _| v.cos()),
        ("sqrtf", |v, _| v.abs().sqrt()),
        ("sigmoid", |v, _| 1.0 / (1.0 + (-v).exp())),
        ("soft_clamp", |v, _| 3.0 * (v / 3.0).tanh()),
    ];
    for (i, &v) in x.iter().enumerate() {
        for (k, (name, f)) in references.iter().enumerate() {
            if *name == "gelu" && v.abs() >= 3.0 {
                continue;
            }
            let want = f(f64::from(v), &erf);
            let got = f64::from(got[10 * i + k]);
            // NVRTC's inline functions are accurate to ~2 ulp; GELU's 1 + erf cancels for
            // negative v, so its error is relative to the size of its terms, |v|
            let scale = if *name == "gelu" { f64::from(v).abs() } else { want.abs() };
            let ok = got == want as f32 as f64
                || (got - want).abs() <= 4.0 * f64::from(f32::EPSILON) * scale + 1e-30
                || (want.is_infinite() && got == want);
            assert!(ok, "{name}({v}) = {got:e}, want {want:e}");
        }
    }

    let x: Vec<f32> = vec![2.7, -2.7, 3.5, 4.5, -1e10, 5e9, f32::NAN, 0.4, 1.7, -0.2];
    let wide: Vec<i64> = vec![1 << 40, -(1 << 25) - 1, 16777217, 3, -7, i64::MAX, 0, 1, 2, 9];
    let n = x.len();
    let xa = input(&mut mem, &bytes_of_f32(&x));
    let wa = input(&mut mem, &wide.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    let outs: Vec<u64> = [4, 4, 4, 8, 1].iter().map(|&size| mem.alloc(size * n).unwrap()).collect();
    let mut args = vec![Arg::U64(xa), Arg::U64(wa)];
    args.extend(outs.iter().map(|&o| Arg::U64(o)));
    args.push(Arg::I32(n as i32));
    m.launch(&mut mem, "casts", launch(1, 32), &args).unwrap();
    let as_int = u32s(&mem.read(outs[0], 4 * n).unwrap());
    let as_unsigned = u32s(&mem.read(outs[1], 4 * n).unwrap());
    let from_wide = f32s(&mem.read(outs[2], 4 * n).unwrap());
    let as_double: Vec<f64> = mem.read(outs[3], 8 * n).unwrap().chunks(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
    let saturated = mem.read(outs[4], n).unwrap();
    for i in 0..n {
        assert_eq!(as_int[i] as i32, x[i] as i32, "(int){}", x[i]);
        assert_eq!(as_unsigned[i], x[i].round_ties_even() as u32, "__float2uint_rn({})", x[i]);
        assert_eq!(from_wide[i], wide[i] as f32, "(float){}", wide[i]);
        assert!(as_double[i] == f64::from(x[i]) * 3.0 || x[i].is_nan(), "(double){} * 3", x[i]);
        assert_eq!(saturated[i], ((x[i].clamp(0.0, 1.0) as u8 as u32 * 255) as u8), "saturate({})", x[i]);
    }
}
