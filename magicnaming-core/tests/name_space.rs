//! Tests of every name-space operation and every error, on the CPU backend.
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use magicnaming_core::{
    HeadActivation, NameEmbedding, NameError, NameHeadConfig, interpolate, mix, prepend, slerp,
};

type B = NdArray<f32>;

fn dev() -> burn::tensor::Device<B> {
    Default::default()
}

fn t2(values: &[f32], shape: [usize; 2]) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &dev())
}

fn t3(values: Vec<f32>, shape: [usize; 3]) -> Tensor<B, 3> {
    Tensor::from_data(TensorData::new(values, shape), &dev())
}

fn name(values: &[f32], shape: [usize; 2]) -> NameEmbedding<B> {
    NameEmbedding::new(t2(values, shape), "test").unwrap()
}

fn host<const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
    x.into_data().to_vec::<f32>().unwrap()
}

/// Prompt embeddings whose value at [b, l, d] is 1000 b + 10 l + d: every position traceable.
fn traceable_prompt(batch: usize, len: usize, dim: usize) -> Tensor<B, 3> {
    let mut v = Vec::new();
    for b in 0..batch {
        for l in 0..len {
            for d in 0..dim {
                v.push((1000 * b + 10 * l + d) as f32);
            }
        }
    }
    t3(v, [batch, len, dim])
}

#[test]
fn prepend_keeps_start_token_inserts_name_and_drops_the_tail() {
    let (batch, len, dim, k) = (2, 6, 3, 2);
    let prompt = traceable_prompt(batch, len, dim);
    let n = name(&[-1., -2., -3., -4., -5., -6.], [k, dim]);
    let out = prepend(prompt, &n).unwrap();
    assert_eq!(out.dims(), [batch, len, dim]);
    let v = host(out);
    for b in 0..batch {
        let row = |l: usize| &v[(b * len + l) * dim..(b * len + l + 1) * dim];
        // Token 0: the start token, untouched.
        assert_eq!(
            row(0),
            &[
                (1000 * b) as f32,
                (1000 * b + 1) as f32,
                (1000 * b + 2) as f32
            ]
        );
        // Tokens 1..=K: the name, the same for every sample.
        assert_eq!(row(1), &[-1., -2., -3.]);
        assert_eq!(row(2), &[-4., -5., -6.]);
        // Tokens K+1..L: the prompt's tokens 1..L-K; its last K tokens are gone.
        for l in (k + 1)..len {
            let src = l - k;
            let base = (1000 * b + 10 * src) as f32;
            assert_eq!(row(l), &[base, base + 1., base + 2.], "b={b} l={l}");
        }
    }
}

#[test]
fn prepend_per_sample_names() {
    let prompt = traceable_prompt(2, 4, 2);
    let names = t3(vec![7., 7., 8., 8.], [2, 1, 2]);
    let v = host(prepend(prompt, names).unwrap());
    assert_eq!(&v[2..4], &[7., 7.]);
    assert_eq!(&v[8 + 2..8 + 4], &[8., 8.]);
    // Sample 1's start token stays its own.
    assert_eq!(&v[8..10], &[1000., 1001.]);
}

#[test]
fn prepend_name_filling_all_but_the_start_token() {
    let prompt = traceable_prompt(1, 3, 1);
    let v = host(prepend(prompt, name(&[5., 6.], [2, 1])).unwrap());
    assert_eq!(v, vec![0., 5., 6.]);
}

#[test]
fn prepend_errors() {
    let prompt = traceable_prompt(2, 4, 3);
    match prepend(prompt.clone(), name(&[0.; 4], [2, 2])) {
        Err(NameError::DimMismatch {
            name_dim: 2,
            prompt_dim: 3,
        }) => {}
        other => panic!("expected DimMismatch, got {other:?}"),
    }
    match prepend(prompt.clone(), name(&[0.; 12], [4, 3])) {
        Err(NameError::TooManyTokens {
            tokens: 4,
            seq_len: 4,
        }) => {}
        other => panic!("expected TooManyTokens, got {other:?}"),
    }
    match prepend(prompt, t3(vec![0.; 9], [3, 1, 3])) {
        Err(NameError::BatchMismatch {
            names: 3,
            prompts: 2,
        }) => {}
        other => panic!("expected BatchMismatch, got {other:?}"),
    }
}

#[test]
fn name_rejects_non_finite_and_empty() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let r = NameEmbedding::new(t2(&[1., bad], [1, 2]), "x");
        assert!(
            matches!(r, Err(NameError::NonFinite { .. })),
            "{bad}: {r:?}"
        );
    }
    let empty = Tensor::<B, 2>::zeros([0, 4], &dev());
    assert!(matches!(
        NameEmbedding::new(empty, "x"),
        Err(NameError::Empty { .. })
    ));
}

#[test]
fn interpolate_endpoints_midpoint_and_extrapolation() {
    let a = name(&[0., 2., 4., 6.], [2, 2]);
    let b = name(&[4., 2., 0., -2.], [2, 2]);
    assert_eq!(
        host(interpolate(&a, &b, 0.0).unwrap().into_tokens()),
        vec![0., 2., 4., 6.]
    );
    assert_eq!(
        host(interpolate(&a, &b, 1.0).unwrap().into_tokens()),
        vec![4., 2., 0., -2.]
    );
    assert_eq!(
        host(interpolate(&a, &b, 0.25).unwrap().into_tokens()),
        vec![1., 2., 3., 4.]
    );
    assert_eq!(
        host(interpolate(&a, &b, 1.5).unwrap().into_tokens()),
        vec![6., 2., -2., -6.]
    );
    assert_eq!(
        host(interpolate(&a, &b, -0.5).unwrap().into_tokens()),
        vec![-2., 2., 6., 10.]
    );
}

#[test]
fn interpolate_errors() {
    let a = name(&[0.; 4], [2, 2]);
    let b = name(&[0.; 6], [3, 2]);
    assert!(matches!(
        interpolate(&a, &b, 0.5),
        Err(NameError::ShapeMismatch { .. })
    ));
    for t in [f64::NAN, f64::INFINITY] {
        assert!(matches!(
            interpolate(&a, &a, t),
            Err(NameError::NonFiniteParameter { .. })
        ));
    }
    // Extrapolating so far that f32 overflows is caught, not returned as infinities.
    let big = name(&[3e38, 3e38], [1, 2]);
    let neg = name(&[-3e38, -3e38], [1, 2]);
    assert!(matches!(
        interpolate(&big, &neg, -1.0),
        Err(NameError::NonFinite { .. })
    ));
}

/// f32 rounding of unit-scale values through a handful of ops: 1e-5 leaves a 50x margin
/// over f32's 1.2e-7 epsilon times the few operations involved.
const F32_TOL: f32 = 1e-5;

fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "element {i}: got {g}, want {w}");
    }
}

#[test]
fn slerp_follows_the_great_circle() {
    // Token 0: unit x to unit y (90 degrees); token 1: 2x to 2y.
    let a = name(&[1., 0., 2., 0.], [2, 2]);
    let b = name(&[0., 1., 0., 2.], [2, 2]);
    let h = std::f32::consts::FRAC_1_SQRT_2;
    let mid = host(slerp(&a, &b, 0.5).unwrap().into_tokens());
    assert_close(&mid, &[h, h, 2. * h, 2. * h], F32_TOL);
    let third = host(slerp(&a, &b, 1.0 / 3.0).unwrap().into_tokens());
    let (c, s) = (30f32.to_radians().cos(), 30f32.to_radians().sin());
    assert_close(&third, &[c, s, 2. * c, 2. * s], F32_TOL);
    assert_close(
        &host(slerp(&a, &b, 0.0).unwrap().into_tokens()),
        &[1., 0., 2., 0.],
        F32_TOL,
    );
    assert_close(
        &host(slerp(&a, &b, 1.0).unwrap().into_tokens()),
        &[0., 1., 0., 2.],
        F32_TOL,
    );
    // Extrapolation continues along the circle: t = 2 reaches 180 degrees.
    assert_close(
        &host(slerp(&a, &b, 2.0).unwrap().into_tokens()),
        &[-1., 0., -2., 0.],
        F32_TOL,
    );
}

#[test]
fn slerp_is_stable_for_parallel_and_zero_vectors() {
    // Identical and nearly identical vectors: no NaN, result equals linear interpolation.
    let a = name(&[1., 2., 3., 0., 0., 0.], [2, 3]);
    let b = name(&[1., 2., 3.000001, 0., 0., 0.], [2, 3]);
    let s = host(slerp(&a, &b, 0.3).unwrap().into_tokens());
    let l = host(interpolate(&a, &b, 0.3).unwrap().into_tokens());
    assert_close(&s, &l, F32_TOL);
    // Parallel vectors of different norms: the linear limit interpolates the norm.
    let c = name(&[2., 4., 6., 0., 0., 0.], [2, 3]);
    let s = host(slerp(&a, &c, 0.5).unwrap().into_tokens());
    assert_close(&s, &[1.5, 3., 4.5, 0., 0., 0.], F32_TOL);
}

#[test]
fn slerp_errors() {
    let a = name(&[1., 0.], [1, 2]);
    let opposite = name(&[-1., 0.], [1, 2]);
    assert!(matches!(
        slerp(&a, &opposite, 0.5),
        Err(NameError::Antiparallel { token: 0, .. })
    ));
    let other = name(&[1., 0., 0., 1.], [2, 2]);
    assert!(matches!(
        slerp(&a, &other, 0.5),
        Err(NameError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        slerp(&a, &a, f64::NAN),
        Err(NameError::NonFiniteParameter { .. })
    ));
}

#[test]
fn mix_normalises_weights() {
    let a = name(&[1., 0.], [1, 2]);
    let b = name(&[0., 1.], [1, 2]);
    let c = name(&[1., 1.], [1, 2]);
    let m = host(
        mix(&[(&a, 2.0), (&b, 1.0), (&c, 1.0)])
            .unwrap()
            .into_tokens(),
    );
    assert_close(&m, &[0.75, 0.5], F32_TOL);
    // A zero weight is allowed as long as one is positive; one name returns itself.
    let m = host(mix(&[(&a, 0.0), (&b, 3.0)]).unwrap().into_tokens());
    assert_close(&m, &[0., 1.], F32_TOL);
}

#[test]
fn mix_errors() {
    let a = name(&[1., 0.], [1, 2]);
    let wide = name(&[1., 0., 0.], [1, 3]);
    assert!(matches!(mix::<B>(&[]), Err(NameError::Empty { .. })));
    assert!(matches!(
        mix(&[(&a, 1.0), (&a, -0.5)]),
        Err(NameError::NegativeWeight { index: 1, .. })
    ));
    assert!(matches!(
        mix(&[(&a, 0.0), (&a, 0.0)]),
        Err(NameError::AllZeroWeights { count: 2 })
    ));
    assert!(matches!(
        mix(&[(&a, f64::NAN)]),
        Err(NameError::NonFiniteParameter { .. })
    ));
    assert!(matches!(
        mix(&[(&a, 1.0), (&wide, 1.0)]),
        Err(NameError::ShapeMismatch { .. })
    ));
}

#[test]
fn name_head_shapes_config_and_loss() {
    let config = NameHeadConfig::new(6)
        .with_hidden_dims(vec![5, 7])
        .with_activation(HeadActivation::Relu)
        .with_num_tokens(3)
        .with_token_dim(4);
    let head = config.init::<B>(&dev()).unwrap();
    // "FC x 3": two hidden widths give three linear layers.
    assert_eq!(head.layers.len(), 3);
    assert_eq!(head.input_dim(), 6);
    let x = Tensor::<B, 2>::ones([2, 6], &dev());
    let y = head.forward(x);
    assert_eq!(y.dims(), [2, 3, 4]);
    // MSE of a tensor against itself is 0; against itself + 1 it is exactly 1.
    let zero = head.loss(y.clone(), y.clone()).into_scalar();
    let one = head.loss(y.clone(), y + 1.0).into_scalar();
    assert_eq!(zero, 0.0);
    assert!((one - 1.0).abs() < F32_TOL, "{one}");
    // Defaults are MagicNaming's: K = 8, D = 2048, FC x 3.
    let d = NameHeadConfig::new(2048);
    assert_eq!(
        (d.num_tokens, d.token_dim, d.hidden_dims.len()),
        (8, 2048, 2)
    );
    // Zero widths are a named error, not a panic.
    let bad = NameHeadConfig::new(0).init::<B>(&dev());
    assert!(matches!(bad, Err(NameError::InvalidConfig(_))));
}

#[test]
fn name_head_config_round_trips_through_json() {
    let config = NameHeadConfig::new(10)
        .with_hidden_dims(vec![3])
        .with_activation(HeadActivation::Silu);
    use burn::config::Config;
    let json = config.to_string();
    let back = NameHeadConfig::load_binary(json.as_bytes()).unwrap();
    assert_eq!(back.hidden_dims, vec![3]);
    assert_eq!(back.activation, HeadActivation::Silu);
}

#[test]
fn name_head_trains_on_autodiff() {
    use burn::backend::Autodiff;
    type A = Autodiff<B>;
    let head = NameHeadConfig::new(4)
        .with_hidden_dims(vec![8, 8])
        .with_num_tokens(2)
        .with_token_dim(3)
        .init::<A>(&dev())
        .unwrap();
    let x = Tensor::<A, 2>::ones([1, 4], &dev());
    let target = Tensor::<A, 3>::zeros([1, 2, 3], &dev());
    let loss = head.loss(head.forward(x), target);
    let grads = loss.backward();
    let g = head.layers[0]
        .weight
        .grad(&grads)
        .expect("first layer receives a gradient");
    assert_eq!(g.dims(), [4, 8]);
}

#[test]
fn save_and_load_round_trip_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.safetensors");
    let n = NameEmbedding::new(
        t2(&[0.5, -1.25, 3.0, 1e-3, 7.0, -8.0], [3, 2]),
        "Ada Lovelace",
    )
    .unwrap();
    n.save(&path).unwrap();
    let back = NameEmbedding::<B>::load(&path, &dev()).unwrap();
    assert_eq!(back.num_tokens(), 3);
    assert_eq!(back.dim(), 2);
    assert_eq!(back.source(), "Ada Lovelace");
    assert_eq!(
        host(back.into_tokens()),
        vec![0.5, -1.25, 3.0, 1e-3, 7.0, -8.0]
    );
    // No temporary file is left beside it.
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
}

#[test]
fn load_errors_name_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let e = NameEmbedding::<B>::load(&missing, &dev()).unwrap_err();
    assert!(matches!(e, NameError::Io { .. }));
    assert!(e.to_string().contains("nope.safetensors"), "{e}");

    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let e = NameEmbedding::<B>::load(&junk, &dev())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("junk.safetensors") && e.contains("not a safetensors"),
        "{e}"
    );

    let write =
        |file: &str, tensor: &str, dtype: safetensors::Dtype, shape: Vec<usize>, bytes: Vec<u8>| {
            let p = dir.path().join(file);
            let view = safetensors::tensor::TensorView::new(dtype, shape, &bytes).unwrap();
            std::fs::write(&p, safetensors::serialize([(tensor, view)], None).unwrap()).unwrap();
            p
        };
    let p = write(
        "other.safetensors",
        "latents",
        safetensors::Dtype::F32,
        vec![1, 1],
        vec![0; 4],
    );
    let e = NameEmbedding::<B>::load(&p, &dev())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no tensor `name`") && e.contains("latents"),
        "{e}"
    );
    let p = write(
        "f16.safetensors",
        "name",
        safetensors::Dtype::F16,
        vec![1, 2],
        vec![0; 4],
    );
    let e = NameEmbedding::<B>::load(&p, &dev())
        .unwrap_err()
        .to_string();
    assert!(e.contains("F16"), "{e}");
    let p = write(
        "rank3.safetensors",
        "name",
        safetensors::Dtype::F32,
        vec![1, 1, 2],
        vec![0; 8],
    );
    let e = NameEmbedding::<B>::load(&p, &dev())
        .unwrap_err()
        .to_string();
    assert!(e.contains("[1, 1, 2]"), "{e}");
    let nan = f32::NAN
        .to_le_bytes()
        .iter()
        .chain(&1f32.to_le_bytes())
        .copied()
        .collect();
    let p = write(
        "nan.safetensors",
        "name",
        safetensors::Dtype::F32,
        vec![1, 2],
        nan,
    );
    let e = NameEmbedding::<B>::load(&p, &dev()).unwrap_err();
    assert!(
        matches!(e, NameError::NonFinite { .. }) && e.to_string().contains("nan.safetensors"),
        "{e}"
    );
}

#[test]
fn save_to_a_missing_folder_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_such_dir").join("n.safetensors");
    let e = name(&[1., 2.], [1, 2]).save(&path).unwrap_err();
    assert!(matches!(e, NameError::Io { .. }), "{e}");
    assert!(!path.exists());
}
